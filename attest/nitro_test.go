package attest

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hf/nsm/request"
	"github.com/hf/nsm/response"
)

// fakeNSM stands in for /dev/nsm, which exists only inside an enclave: it
// answers attestation requests with documents from the dev attestor (the
// same format), or with what the test sets.
type fakeNSM struct {
	dev  *Dev
	last *request.Attestation
	res  *response.Response // when set, the answer
	err  error
}

func (f *fakeNSM) Send(r request.Request) (response.Response, error) {
	a, ok := r.(*request.Attestation)
	if !ok {
		return response.Response{Error: response.ECInvalidOperation}, nil
	}
	f.last = a
	if f.err != nil || f.res != nil {
		if f.res == nil {
			return response.Response{}, f.err
		}
		return *f.res, f.err
	}
	doc, err := f.dev.Attest(context.Background(), a.PublicKey, a.UserData, a.Nonce)
	if err != nil {
		return response.Response{Error: response.ECInternalError}, nil
	}
	return response.Response{Attestation: &response.Attestation{Document: doc}}, nil
}

func TestNitroAttester(t *testing.T) {
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	dev, err := LoadOrCreateDev(t.TempDir(), bytes.Repeat([]byte{1}, 48), func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	pub := bytes.Repeat([]byte{0xcd}, 32)
	f := &fakeNSM{dev: dev}
	n := NewNitro(f)
	if n.Mode() != "nitro" {
		t.Errorf("mode %q", n.Mode())
	}
	doc, err := n.Attest(context.Background(), pub, []byte("u"), []byte("n"))
	if err != nil {
		t.Fatal(err)
	}
	if d, _, err := Inspect(doc); err != nil || !bytes.Equal(d.PublicKey, pub) {
		t.Errorf("document for %x (%v)", d.PublicKey, err)
	}
	if !bytes.Equal(f.last.PublicKey, pub) || string(f.last.UserData) != "u" || string(f.last.Nonce) != "n" {
		t.Errorf("request %+v", f.last)
	}

	other, _ := dev.Attest(context.Background(), bytes.Repeat([]byte{1}, 32), nil, nil)
	for _, tc := range []struct {
		name string
		res  *response.Response
		err  error
		want string
	}{
		{"device error", nil, errors.New("ioctl failed"), "nsm: ioctl failed"},
		{"error code", &response.Response{Error: response.ECInvalidArgument}, nil, "nsm: InvalidArgument"},
		{"no document", &response.Response{Attestation: &response.Attestation{}}, nil, "no attestation document"},
		{"garbage", &response.Response{Attestation: &response.Attestation{Document: []byte("junk")}}, nil, "not a COSE_Sign1"},
		{"another key", &response.Response{Attestation: &response.Attestation{Document: other}}, nil, "another public key"},
	} {
		f.res, f.err = tc.res, tc.err
		if _, err := n.Attest(context.Background(), pub, nil, nil); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	f.res, f.err = nil, nil
	if _, err := n.Attest(context.Background(), pub, bytes.Repeat([]byte{1}, MaxAttestField+1), nil); err == nil || !strings.Contains(err.Error(), "user_data of 1025 bytes") {
		t.Errorf("oversized user_data: %v", err)
	}
}

// Outside an enclave there is no /dev/nsm: opening says so.
func TestOpenNitroOutsideAnEnclave(t *testing.T) {
	n, err := OpenNitro()
	if err == nil {
		n.Close()
		t.Skip("this machine has /dev/nsm")
	}
	if !strings.Contains(err.Error(), "/dev/nsm") {
		t.Errorf("error %q does not name /dev/nsm", err)
	}
}

// Simulate gives the PCRs of a launch on an EC2 instance from an image
// signed with a certificate.
func TestDevSimulatesPCR4AndPCR8(t *testing.T) {
	dev, err := LoadOrCreateDev(t.TempDir(), bytes.Repeat([]byte{1}, 48), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	dev.Simulate("i-0123456789abcdef0", []byte("cert der"))
	if !bytes.Equal(dev.PCRs()[4], PCRDigest([]byte("i-0123456789abcdef0"))) || !bytes.Equal(dev.PCRs()[8], CertPCR8([]byte("cert der"))) {
		t.Error("PCR4/PCR8 not simulated")
	}
}
