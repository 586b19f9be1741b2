package nip

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"

	"github.com/btcsuite/btcd/btcec/v2"
	"github.com/btcsuite/btcd/btcec/v2/schnorr"
	"github.com/nbd-wtf/go-nostr"
	"github.com/nbd-wtf/go-nostr/nip44"
	"github.com/nbd-wtf/go-nostr/nip59"
)

// NIP-59 gift wraps, as go-nostr's nip59 makes and reads them, with less
// elliptic-curve work when the keys are LocalKeys: a gift wrap's random
// key is seen once, so its conversation key is not cached, and no key is
// parsed (and its public key derived) again for each message.

// unwrap opens a gift wrap addressed to keys: the seal's signature is
// checked, and the rumor's author is the seal's signer.
func unwrap(ctx context.Context, keys Keys, evt *nostr.Event) (nostr.Event, error) {
	lk, ok := keys.(*LocalKeys)
	if !ok {
		return nip59.GiftUnwrap(*evt, func(other, ct string) (string, error) {
			if len(ct) > MaxContent {
				return "", errors.New("ciphertext too long")
			}
			return keys.Decrypt(ctx, ct, other)
		})
	}
	var rumor nostr.Event
	if len(evt.Content) > MaxContent {
		return rumor, errors.New("ciphertext too long")
	}
	jseal, err := lk.decryptOnce(evt.Content, evt.PubKey)
	if err != nil {
		return rumor, fmt.Errorf("failed to decrypt seal: %w", err)
	}
	var seal nostr.Event
	if err := seal.UnmarshalJSON([]byte(jseal)); err != nil {
		return rumor, fmt.Errorf("seal is invalid json: %w", err)
	}
	if ok, _ := seal.CheckSignature(); !ok {
		return rumor, errors.New("seal signature is invalid")
	}
	if len(seal.Content) > MaxContent {
		return rumor, errors.New("ciphertext too long")
	}
	jrumor, err := lk.Decrypt(ctx, seal.Content, seal.PubKey)
	if err != nil {
		return rumor, fmt.Errorf("failed to decrypt rumor: %w", err)
	}
	if err := rumor.UnmarshalJSON([]byte(jrumor)); err != nil {
		return rumor, fmt.Errorf("rumor is invalid json: %w", err)
	}
	rumor.PubKey = seal.PubKey
	rumor.ID = rumor.GetID()
	return rumor, nil
}

// giftWrap seals rumor (signed by keys) and wraps the seal for recipient
// with a random key, both dated up to wrapBackdate in the past (NIP-59).
func giftWrap(ctx context.Context, keys Keys, rumor nostr.Event, recipient string) (nostr.Event, error) {
	lk, ok := keys.(*LocalKeys)
	if !ok {
		return nip59.GiftWrap(rumor, recipient,
			func(s string) (string, error) { return keys.Encrypt(ctx, s, recipient) },
			func(e *nostr.Event) error { return keys.SignEvent(ctx, e) }, nil)
	}
	rumor.Sig = ""
	ct, err := lk.Encrypt(ctx, rumor.String(), recipient)
	if err != nil {
		return nostr.Event{}, err
	}
	seal := nostr.Event{Kind: nostr.KindSeal, Content: ct, CreatedAt: backdated(), Tags: nostr.Tags{}}
	if err := lk.SignEvent(ctx, &seal); err != nil {
		return nostr.Event{}, err
	}
	once, err := btcec.NewPrivateKey()
	if err != nil {
		return nostr.Event{}, err
	}
	ck, err := conversationKey(once, recipient)
	if err != nil {
		return nostr.Event{}, err
	}
	sealed, err := nip44.Encrypt(seal.String(), ck)
	if err != nil {
		return nostr.Event{}, err
	}
	wrap := nostr.Event{Kind: nostr.KindGiftWrap, Content: sealed, CreatedAt: backdated(), Tags: nostr.Tags{{"p", recipient}}}
	err = signWith(once, hexKey(schnorr.SerializePubKey(once.PubKey())), &wrap)
	return wrap, err
}

// wrapBackdate is how far in the past a seal or a wrap may be dated, at
// random to the minute (as go-nostr's nip59 does).
const wrapBackdate = 600 // minutes

func backdated() nostr.Timestamp {
	return nostr.Now() - nostr.Timestamp(60*rand.Int64N(wrapBackdate))
}
