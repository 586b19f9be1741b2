package lnd

import (
	"strings"
	"testing"
)

func TestDialRejectsBadEndpoint(t *testing.T) {
	cases := []struct {
		name string
		ep   Endpoint
		want string
	}{
		{"no cert", Endpoint{Addr: "127.0.0.1:1", Macaroon: []byte{1}}, "not a PEM certificate"},
		{"garbage cert", Endpoint{Addr: "127.0.0.1:1", TLSCert: []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), Macaroon: []byte{1}}, "lnd tls cert"},
	}
	for _, tc := range cases {
		_, err := Dial(tc.ep)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestMacaroonNeverPrinted(t *testing.T) {
	m := macaroonCred("0201036c6e6402f801")
	if s := m.String(); strings.Contains(s, "0201") {
		t.Errorf("String() = %q", s)
	}
	if !m.RequireTransportSecurity() {
		t.Error("macaroon would be sent without TLS")
	}
}
