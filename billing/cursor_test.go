package billing

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"
)

// resumes is a Lightning node that settles nothing: it records where each
// subscription resumes and ends the watch after the first.
type resumes struct {
	Lightning
	after  []string
	cancel func()
}

func (r *resumes) SubscribeSettlements(ctx context.Context, after string, fn func(Settlement) error) error {
	r.after = append(r.after, after)
	r.cancel()
	return ctx.Err()
}

// A database written before the cursor (or a backup of one) kept LND's
// settle index under lnd_settle_index: the watcher resumes after it, and
// the first settlement applied moves the cursor to its new key.
func TestCursorResumesFromTheSettleIndexOfBefore(t *testing.T) {
	ctx := context.Background()
	db := openDB(t)
	l := NewLedger(db)
	watch := func() []string {
		t.Helper()
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		r := &resumes{cancel: cancel}
		WatchSettlements(wctx, r, l, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
		return r.after
	}
	if got := watch(); len(got) != 1 || got[0] != "" {
		t.Fatalf("a new database resumes after %q, want \"\"", got)
	}
	if err := db.SetMeta(ctx, "lnd_settle_index", "41"); err != nil { // as an instance of before wrote it
		t.Fatal(err)
	}
	if got := watch(); len(got) != 1 || got[0] != "41" {
		t.Fatalf("a database of before resumes after %q, want 41", got)
	}
	addContainer(t, db, "a", 1, 1000, "h")
	if _, err := l.ApplySettlement(ctx, Settlement{PaymentHash: "h", AmountMsat: 1000, Cursor: "42", SettledAt: t0}); err != nil {
		t.Fatal(err)
	}
	if got := watch(); len(got) != 1 || got[0] != "42" {
		t.Fatalf("after a settlement: resumes after %q, want 42", got)
	}
	if v, err := db.Meta(ctx, "lightning_cursor"); err != nil || v != "42" {
		t.Errorf("lightning_cursor %q %v, want 42", v, err)
	}
}
