package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/enclaved/enclaved/billing/lnd"
	"github.com/enclaved/enclaved/internal/regtest"
)

var lightning sharedPart[*regtest.Net]

// Lightning returns the package's shared regtest network, starting it on the
// first call (about 10 s). It fails the test if the tools are missing.
func Lightning(tb testing.TB) *regtest.Net {
	tb.Helper()
	return lightning.get(tb, "lightning", func() (*regtest.Net, func(), error) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		bins, err := regtest.Tools()
		if err != nil {
			return nil, nil, err
		}
		dir, err := sharedDir("lightning")
		if err != nil {
			return nil, nil, err
		}
		n, err := regtest.Start(ctx, dir, bins)
		if err != nil {
			return nil, nil, err
		}
		return n, n.Close, nil
	})
}

// InvoiceClient returns billing's LND client on node with invoice.macaroon,
// as the enclave connects, closed when the test ends.
func InvoiceClient(tb testing.TB, node *regtest.Node) *lnd.Client {
	tb.Helper()
	ep, err := node.Endpoint("invoice")
	if err != nil {
		tb.Fatal(err)
	}
	c, err := lnd.New(ep)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}
