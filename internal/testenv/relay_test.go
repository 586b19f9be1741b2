package testenv_test

import (
	"context"
	"testing"
	"time"

	"github.com/nbd-wtf/go-nostr"

	"github.com/enclaved/enclaved/internal/testenv"
)

// A signed event published to the relay is returned by a query, and a live
// subscriber receives it too.
func TestRelayPublishAndQuery(t *testing.T) {
	r := testenv.Relay(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sk := nostr.GeneratePrivateKey()
	pk, _ := nostr.GetPublicKey(sk)

	sub, err := nostr.RelayConnect(ctx, r.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	live, err := sub.Subscribe(ctx, nostr.Filters{{Authors: []string{pk}}})
	if err != nil {
		t.Fatal(err)
	}

	pub, err := nostr.RelayConnect(ctx, r.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	evt := nostr.Event{Kind: nostr.KindTextNote, Content: "hello relay", CreatedAt: nostr.Now(), Tags: nostr.Tags{}}
	if err := evt.Sign(sk); err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(ctx, evt); err != nil {
		t.Fatalf("publish: %v", err)
	}

	got, err := pub.QuerySync(ctx, nostr.Filter{Authors: []string{pk}, Kinds: []int{nostr.KindTextNote}})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].ID != evt.ID || got[0].Content != "hello relay" {
		t.Fatalf("query returned %v, want the published event", got)
	}
	select {
	case e := <-live.Events:
		if e.ID != evt.ID {
			t.Errorf("live subscriber got %s, want %s", e.ID, evt.ID)
		}
	case <-ctx.Done():
		t.Fatal("live subscriber never got the event")
	}

	// A forged signature is refused.
	bad := evt
	bad.Content = "tampered"
	if err := pub.Publish(ctx, bad); err == nil {
		t.Error("relay accepted an event whose signature does not match")
	}
}
