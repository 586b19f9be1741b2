package nip

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/nbd-wtf/go-nostr"
	"github.com/nbd-wtf/go-nostr/nip19"
	"github.com/nbd-wtf/go-nostr/nip44"
)

func rpcCommand(t *testing.T, plaintext string) (Command, bool, error) {
	t.Helper()
	req, err := ParseRPC(plaintext)
	if err != nil {
		return Command{}, false, err
	}
	return RPCCommand(req)
}

// Each method maps to the command the DM grammar would make of the same
// words, with the same defaults and bounds.
func TestRPCCommands(t *testing.T) {
	hex := strings.Repeat("ab", 32)
	npub, _ := nip19.EncodePublicKey(hex)
	for _, tc := range []struct {
		in    string
		want  Command
		owner bool
	}{
		{`{"id":"1","method":"launch","params":{"docker":"reg/app@sha256:00","units":2}}`,
			Command{Verb: VerbDeploy, Image: "reg/app@sha256:00", Units: 2, Hours: 1}, false},
		{`{"id":"1","method":"launch","params":{"docker":"a","units":"3","name":"web","env":{"B":"2","A":"x y"},"upgrade":"auto"}}`,
			Command{Verb: VerbDeploy, Image: "a", Units: 3, Hours: 1, Name: "web", Env: []EnvVar{{"A", "x y"}, {"B", "2"}}}, false},
		{`{"id":"1","method":"quote","params":{"image":"a","hours":5,"egress":["Example.com:443"],"port":8080,"admin":true}}`,
			Command{Verb: VerbDeploy, Image: "a", Units: 1, Hours: 5, Egress: []string{"example.com:443"}, Port: 8080, Admin: true}, false},
		{`{"id":"1","method":"status","params":{}}`, Command{Verb: VerbStatus}, false},
		{`{"id":"1","method":"status"}`, Command{Verb: VerbStatus}, false},
		{`{"id":"1","method":"status","params":{"container":"Web"}}`, Command{Verb: VerbStatus, Target: "web"}, false},
		{`{"id":"1","method":"info","params":{"pubkey":"` + hex + `","docker":"dummy"}}`, Command{Verb: VerbStatus, Target: npub}, true},
		{`{"id":"1","method":"topup","params":{"name":"web","sats":21}}`, Command{Verb: VerbTopup, Target: "web", Sats: 21}, false},
		{`{"id":"1","method":"logs","params":{"container":"web"}}`, Command{Verb: VerbLogs, Target: "web", Lines: DefaultLines}, false},
		{`{"id":"1","method":"stop","params":{"pubkey":"` + npub + `"}}`, Command{Verb: VerbStop, Target: npub}, false},
		{`{"id":"1","method":"instance","params":[]}`, Command{Verb: VerbInstance}, false},
	} {
		got, owner, err := rpcCommand(t, tc.in)
		if err != nil {
			t.Errorf("%s: %v", tc.in, err)
			continue
		}
		a, _ := json.Marshal(got)
		b, _ := json.Marshal(tc.want)
		if string(a) != string(b) || owner != tc.owner {
			t.Errorf("%s:\n got %s owner=%v\nwant %s owner=%v", tc.in, a, owner, b, tc.owner)
		}
	}
	for in, want := range map[string]string{
		`{"id":"1","method":"launch","params":{"docker":"a","units":1,"env":{"K":null}}}`:      "its value must be a string",
		`{"id":"1","method":"launch","params":{"docker":"a","units":1,"env":{"1K":"v"}}}`:      `env key "1K"`,
		`{"id":"1","method":"launch","params":{"docker":"a","units":1,"env":{"K":"a\u0000"}}}`: "without NUL",
		`{"id":"1","method":"launch","params":{"docker":"a b","units":1}}`:                     "is not an image reference",
		`{"id":"1","method":"launch","params":{"docker":"a","units":1,"name":"npub1x"}}`:       "name",
		`{"id":"1","method":"launch","params":{"docker":"a","units":1,"upgrade":"never"}}`:     "upgrade must be",
		`{"id":"1","method":"launch","params":{"docker":7,"units":1}}`:                         "docker must be a string",
		`{"id":"1","method":"quote","params":{"image":"a","docker":"b"}}`:                      "different images",
		`{"id":"1","method":"quote","params":{"image":"a","admin":"yes"}}`:                     "admin must be true or false",
		`{"id":"1","method":"quote","params":{"image":"a","egress":"x.com"}}`:                  "egress must be an array of strings",
		`{"id":"1","method":"quote","params":{"image":"a","port":70000}}`:                      "port: want a whole number from 1 to 65535",
		`{"id":"1","method":"status","params":[1]}`:                                            "params must be an object",
		`{"id":"1","method":"stop","params":{"container":"a b"}}`:                              "not a container name",
		`{"id":"1","method":"help","params":{"x":1}}`:                                          "help takes no params",
		`{"id":"1","method":"deploy","params":{}}`:                                             `unknown method "deploy"`,
	} {
		if _, _, err := rpcCommand(t, in); err == nil || !strings.Contains(err.Error(), want) || !IsUserError(err) {
			t.Errorf("%s: error %v, want %q", in, err, want)
		}
	}
}

// Env values in a request are bounded as a DM's are: 4 KiB each, 16 KiB
// in all.
func TestRPCEnvBounds(t *testing.T) {
	long := strings.Repeat("v", MaxCommandLen+1)
	if _, _, err := rpcCommand(t, `{"id":"1","method":"launch","params":{"docker":"a","units":1,"env":{"K":"`+long+`"}}}`); err == nil || !strings.Contains(err.Error(), "at most 4096 bytes") {
		t.Errorf("a 4097-byte value: %v", err)
	}
	var env []string
	for i := range 5 {
		env = append(env, fmt.Sprintf(`"K%d":"%s"`, i, strings.Repeat("v", MaxCommandLen-2)))
	}
	if _, _, err := rpcCommand(t, `{"id":"1","method":"launch","params":{"docker":"a","units":1,"env":{`+strings.Join(env, ",")+`}}}`); err == nil || !strings.Contains(err.Error(), "at most 16384 bytes in all") {
		t.Errorf("20 KiB of env: %v", err)
	}
}

// A reply is kind 29425, signed by the instance, tagged p = the caller
// only, and decrypts (NIP-44 v2, as go-nostr does it) to {"id","result"}.
func TestRPCReply(t *testing.T) {
	keys, _ := NewLocalKeys(strings.Repeat("01", 32))
	callerSK := nostr.GeneratePrivateKey()
	caller, _ := nostr.GetPublicKey(callerSK)
	evt, err := RPCReply(context.Background(), keys, caller, RPCResponse{ID: "abc", Result: "pong"}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := evt.CheckSignature(); !ok || evt.Kind != KindRPC || len(evt.Tags) != 1 || evt.Tags[0][1] != caller || evt.PubKey != keys.pub {
		t.Fatalf("reply %v", evt)
	}
	ck, _ := nip44.GenerateConversationKey(keys.pub, callerSK)
	plain, err := nip44.Decrypt(evt.Content, ck)
	if err != nil || plain != `{"id":"abc","result":"pong"}` {
		t.Fatalf("reply decrypts to %q, %v", plain, err)
	}
	big, err := RPCReply(context.Background(), keys, caller, RPCResponse{ID: "x", Result: strings.Repeat("a", MaxRPCReply)}, 1)
	if err != nil {
		t.Fatal(err)
	}
	plain, _ = nip44.Decrypt(big.Content, ck)
	if !strings.Contains(plain, `"error":"the result is too large`) {
		t.Errorf("an oversized result: %q", plain)
	}
}

func FuzzRPC(f *testing.F) {
	for _, s := range []string{
		`{"id":"1","method":"ping","params":[]}`,
		`{"id":"1","method":"launch","params":{"docker":"a","units":"2","env":{"A":"b"}}}`,
		`{"id":"1","method":"quote","params":{"image":"a","hours":5,"egress":["x:1"],"port":80,"admin":true}}`,
		`{"id":"1","method":"topup","params":{"container":"w","sats":1e3}}`,
		`{"id":"1","method":"info","params":{"pubkey":"` + strings.Repeat("0", 64) + `"}}`,
		`{"id":"é","method":"logs","params":{"name":"w","lines":-1}}`,
		`[]`, `{"id":{}}`, `null`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		req, err := ParseRPC(s)
		if err == nil {
			var c Command
			c, _, err = RPCCommand(req)
			if err == nil {
				checkCommand(t, c)
				return
			}
		}
		if !IsUserError(err) {
			t.Fatalf("non-user error %v", err)
		}
		if utf8.ValidString(s) && !utf8.ValidString(err.Error()) {
			t.Fatalf("error %q is not valid UTF-8", err)
		}
		if len(req.ID) > maxRPCID {
			t.Fatalf("id of %d bytes kept", len(req.ID))
		}
	})
}

// checkCommand fails unless c is within the grammar's bounds.
func checkCommand(t *testing.T, c Command) {
	t.Helper()
	switch c.Verb {
	case VerbDeploy:
		if c.Image == "" || len(c.Image) > maxImageLen || c.Units < 1 || c.Units > MaxUnits || c.Hours < 1 || c.Hours > MaxHours ||
			len(c.Env) > MaxEnv || len(c.Egress) > MaxEgress || c.Port < 0 || c.Port > 65535 || (c.Name != "" && !nameRE.MatchString(c.Name)) {
			t.Fatalf("accepted out-of-range deploy %+v", c)
		}
		for _, e := range c.Env {
			if !envKeyRE.MatchString(e.Key) || strings.ContainsRune(e.Value, 0) {
				t.Fatalf("accepted env %q", e)
			}
		}
	case VerbTopup:
		if c.Sats < 1 || c.Sats > MaxTopupSats || !targetRE.MatchString(c.Target) {
			t.Fatalf("accepted bad topup %+v", c)
		}
	case VerbLogs:
		if c.Lines < 1 || c.Lines > MaxLogLines || !targetRE.MatchString(c.Target) {
			t.Fatalf("accepted bad logs %+v", c)
		}
	case VerbStop, VerbStart, VerbDelete:
		if !targetRE.MatchString(c.Target) {
			t.Fatalf("accepted bad target %+v", c)
		}
	}
}
