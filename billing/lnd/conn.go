// Package lnd connects the enclave to the operator's LND node over gRPC.
//
// It runs inside the enclave. The connection crosses the untrusted parent, so
// TLS trusts exactly the node's own certificate (pinned, never the system
// roots) and authenticates with the least macaroon that works: invoice.macaroon
// (create, look up and subscribe to invoices). Macaroon bytes are secrets:
// never log them.
package lnd

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// Dialer opens the raw TCP connection to the node; inside the enclave it
// goes through the parent's egress. Nil means a direct dial.
type Dialer func(ctx context.Context, addr string) (net.Conn, error)

// Endpoint says where the node is and how to authenticate to it.
type Endpoint struct {
	Addr     string // host:port of the node's gRPC listener
	TLSCert  []byte // the node's tls.cert (PEM): the only certificate trusted
	Macaroon []byte // binary macaroon
	Dial     Dialer
}

// EndpointFromFiles reads the certificate and macaroon from disk.
func EndpointFromFiles(addr, certPath, macaroonPath string) (Endpoint, error) {
	cert, err := os.ReadFile(certPath)
	if err != nil {
		return Endpoint{}, fmt.Errorf("lnd tls cert: %w", err)
	}
	mac, err := os.ReadFile(macaroonPath)
	if err != nil {
		return Endpoint{}, fmt.Errorf("lnd macaroon: %w", err)
	}
	return Endpoint{Addr: addr, TLSCert: cert, Macaroon: mac}, nil
}

// Dial returns a gRPC connection to the node. It does not block: errors such
// as a certificate mismatch surface on the first call.
func Dial(ep Endpoint) (*grpc.ClientConn, error) {
	pool := x509.NewCertPool()
	block, _ := pem.Decode(ep.TLSCert)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("lnd tls cert: not a PEM certificate")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("lnd tls cert: %w", err)
	}
	pool.AddCert(cert)
	if len(ep.Macaroon) == 0 {
		return nil, errors.New("lnd macaroon: empty")
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(credentials.NewClientTLSFromCert(pool, "")),
		grpc.WithPerRPCCredentials(macaroonCred(hex.EncodeToString(ep.Macaroon))),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(50 << 20)),
	}
	if ep.Dial != nil {
		opts = append(opts, grpc.WithContextDialer(ep.Dial))
	}
	conn, err := grpc.NewClient(ep.Addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("lnd dial %s: %w", ep.Addr, err)
	}
	return conn, nil
}

// macaroonCred sends the hex macaroon as gRPC metadata, only over TLS.
type macaroonCred string

func (m macaroonCred) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"macaroon": string(m)}, nil
}

func (macaroonCred) RequireTransportSecurity() bool { return true }

// String keeps the macaroon out of any formatted output.
func (macaroonCred) String() string { return "[macaroon]" }
