package attest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/hf/nsm"
	"github.com/hf/nsm/request"
	"github.com/hf/nsm/response"
)

// MaxAttestField bounds public_key, user_data and nonce in a request, as
// the Nitro Security Module does.
const MaxAttestField = 1024

// NSM is the part of the Nitro Security Module session the attester uses
// (*nsm.Session).
type NSM interface {
	Send(request.Request) (response.Response, error)
}

// Nitro attests through the Nitro Security Module (/dev/nsm): the document
// is signed by AWS's chain and carries the enclave's real PCRs.
type Nitro struct {
	mu    sync.Mutex // one request at a time on the session
	nsm   NSM
	close func() error
}

var _ Attester = (*Nitro)(nil)

// OpenNitro opens the enclave's /dev/nsm. Outside a Nitro enclave it fails.
func OpenNitro() (*Nitro, error) {
	sess, err := nsm.OpenDefaultSession()
	if err != nil {
		return nil, fmt.Errorf("attest.mode=nitro: open /dev/nsm: %w (is this a Nitro enclave?)", err)
	}
	return &Nitro{nsm: sess, close: sess.Close}, nil
}

// NewNitro attests through s.
func NewNitro(s NSM) *Nitro { return &Nitro{nsm: s} }

// Mode is "nitro".
func (n *Nitro) Mode() string { return "nitro" }

// Close closes the NSM session.
func (n *Nitro) Close() error {
	if n.close == nil {
		return nil
	}
	return n.close()
}

// Attest asks the NSM for a document binding publicKey (and userData and
// nonce, if given), and checks that the answer is a document for that key.
func (n *Nitro) Attest(ctx context.Context, publicKey, userData, nonce []byte) ([]byte, error) {
	for name, f := range map[string][]byte{"public_key": publicKey, "user_data": userData, "nonce": nonce} {
		if len(f) > MaxAttestField {
			return nil, fmt.Errorf("nsm: %s of %d bytes (at most %d)", name, len(f), MaxAttestField)
		}
	}
	if len(publicKey) == 0 {
		return nil, errors.New("nsm: no public key to attest")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	n.mu.Lock()
	res, err := n.nsm.Send(&request.Attestation{PublicKey: publicKey, UserData: userData, Nonce: nonce})
	n.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("nsm: %w", err)
	}
	if res.Error != "" {
		return nil, fmt.Errorf("nsm: %s", res.Error)
	}
	if res.Attestation == nil || len(res.Attestation.Document) == 0 {
		return nil, errors.New("nsm: the answer holds no attestation document")
	}
	doc := res.Attestation.Document
	d, _, err := Inspect(doc)
	if err != nil {
		return nil, fmt.Errorf("nsm: %w", err)
	}
	if !bytes.Equal(d.PublicKey, publicKey) {
		return nil, errors.New("nsm: the document binds another public key")
	}
	return bytes.Clone(doc), nil
}
