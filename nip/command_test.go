package nip

import (
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParseCommand(t *testing.T) {
	cases := []struct {
		in   string
		want Command
	}{
		{"help", Command{Verb: VerbHelp}},
		{"  HELP me please", Command{Verb: VerbHelp}},
		{"nostr:npub1abc deploy 127.0.0.1:5000/app@sha256:00", Command{Verb: VerbDeploy, Image: "127.0.0.1:5000/app@sha256:00", Units: 1, Hours: 1}},
		{"Deploy nginx UNITS=2 hours=24 name=web env=A=1 env=B=x=y", Command{Verb: VerbDeploy, Image: "nginx", Units: 2, Hours: 24, Name: "web",
			Env: []EnvVar{{"A", "1"}, {"B", "x=y"}}}},
		{"deploy app port=8080 egress=API.example.com,relay.example.org:7777 egress=x.example.com", Command{Verb: VerbDeploy, Image: "app", Units: 1, Hours: 1,
			Port: 8080, Egress: []string{"api.example.com", "relay.example.org:7777", "x.example.com"}}},
		{"deploy app admin=YES", Command{Verb: VerbDeploy, Image: "app", Units: 1, Hours: 1, Admin: true}},
		{"deploy app admin=yes admin=no", Command{Verb: VerbDeploy, Image: "app", Units: 1, Hours: 1}},
		{"status", Command{Verb: VerbStatus}},
		{"status Web", Command{Verb: VerbStatus, Target: "web"}},
		{"topup web 21_000", Command{Verb: VerbTopup, Target: "web", Sats: 21000}},
		{"logs web", Command{Verb: VerbLogs, Target: "web", Lines: DefaultLines}},
		{"logs web 10", Command{Verb: VerbLogs, Target: "web", Lines: 10}},
		{"stop web", Command{Verb: VerbStop, Target: "web"}},
		{"START web", Command{Verb: VerbStart, Target: "web"}},
		{"@enclaved delete npub1xyz", Command{Verb: VerbDelete, Target: "npub1xyz"}},
	}
	for _, tc := range cases {
		got, err := ParseCommand(tc.in)
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%q:\n got %+v\nwant %+v", tc.in, got, tc.want)
		}
	}
}

// Every malformed command gets a specific, one-line user error.
func TestParseCommandErrors(t *testing.T) {
	cases := map[string]string{
		"":                             "empty message",
		"nostr:npub1abc":               "empty message",
		"frobnicate x":                 `unknown command "frobnicate"`,
		"deploy":                       "usage: deploy <image>",
		"deploy a b":                   "one image",
		"deploy a units=0":             "units=0",
		"deploy a units=65":            "from 1 to 64",
		"deploy a hours=x":             "hours=x",
		"deploy a name=Web":            "lowercase",
		"deploy a name=npub1abc":       "look like an npub",
		"deploy a env=1A=b":            "env=1A=b",
		"deploy a env=noequals":        "env=KEY=value",
		"deploy a cpu=3":               `unknown option "cpu"`,
		"deploy a port=0":              "port=0",
		"deploy a admin=true":          "admin=true: want admin=yes",
		"deploy a port=http":           "port=http",
		"deploy a egress=":             "egress=HOST",
		"deploy a egress=a.com,,b.com": "egress=HOST",
		"deploy a egress=" + strings.Repeat("h.com,", 17): "at most 16 egress hosts",
		"deploy " + strings.Repeat("a", 600):              "too long",
		"status a b":                                      "at most one",
		"topup web":                                       "usage: topup",
		"topup web -5":                                    "whole sats",
		"topup web 200000000":                             "whole sats",
		"logs":                                            "usage: logs",
		"logs web 0":                                      "lines",
		"logs web 5000":                                   "lines",
		"stop":                                            "usage: stop",
		"stop we/b":                                       "not a container name",
		strings.Repeat("x", 5000):                         "too long",
	}
	for in, want := range cases {
		_, err := ParseCommand(in)
		if err == nil {
			t.Errorf("%q: no error", clip(in, 40))
			continue
		}
		if !IsUserError(err) || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: error %q, want a one-line user error containing %q", clip(in, 40), err, want)
		}
	}
	env := make([]string, MaxEnv+1)
	for i := range env {
		env[i] = "env=K=v"
	}
	if _, err := ParseCommand("deploy a " + strings.Join(env, " ")); err == nil || !strings.Contains(err.Error(), "at most") {
		t.Errorf("too many env: %v", err)
	}
}

func FuzzParseCommand(f *testing.F) {
	for _, s := range []string{"help", "deploy nginx units=2 env=A=b", "topup web 100", "logs x 5", "nostr:npub1 stop y", "deploy é=ü name=ÿ"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCommand(s)
		if err != nil {
			if !IsUserError(err) {
				t.Fatalf("non-user error %v", err)
			}
			if utf8.ValidString(s) && !utf8.ValidString(err.Error()) {
				t.Fatalf("error %q is not valid UTF-8", err)
			}
			return
		}
		switch c.Verb {
		case VerbDeploy:
			if c.Image == "" || c.Units < 1 || c.Units > MaxUnits || c.Hours < 1 || c.Hours > MaxHours || len(c.Env) > MaxEnv {
				t.Fatalf("accepted out-of-range deploy %+v", c)
			}
		case VerbTopup:
			if c.Sats < 1 || c.Sats > MaxTopupSats || c.Target == "" {
				t.Fatalf("accepted bad topup %+v", c)
			}
		}
	})
}
