package billing

import (
	"context"
	"database/sql"
	"errors"

	"github.com/enclaved/enclaved/store"
)

// The resume cursor is the Lightning backend's, opaque to billing: the
// ledger stores the cursor of the last settlement it applied, in that
// settlement's transaction, and WatchSettlements hands it back to the
// backend to resume after it.
//
// The ledger cannot compare cursors, so it does not: it overwrites. That is
// safe because a cursor that moves back costs only a replay (every
// settlement after it is delivered again, and a settlement is applied once
// per payment hash), while the one thing that loses money, a cursor that
// moves past a settlement not yet applied, is something no comparison in the
// ledger could prevent. That is prevented by whoever applies settlements:
// WatchSettlements is the only caller of ApplySettlement that passes a
// cursor (the instance runs one), and it applies them in the order the
// backend delivers them, a backend promising that when it delivers a
// settlement, every settlement that resuming after its cursor would not
// deliver has been delivered before (see Lightning.SubscribeSettlements).
// Anything else that applies a settlement passes no cursor.
const (
	cursorKey = "lightning_cursor"
	// legacyCursorKey is where the cursor was kept when it was LND's
	// settle index, a decimal, which is also LND's cursor: databases
	// written before the cursor, and backups of them, resume from it.
	legacyCursorKey = "lnd_settle_index"
)

// Cursor returns the cursor after which settlements are still to be
// applied; "" when none was applied yet.
func (l *Ledger) Cursor(ctx context.Context) (string, error) {
	for _, key := range []string{cursorKey, legacyCursorKey} {
		v, err := l.db.Meta(ctx, key)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		return v, err
	}
	return "", nil
}

// setCursor records, in a settlement's transaction, that settlements up to
// cursor are applied; "" leaves the cursor where it is.
func setCursor(ctx context.Context, tx *sql.Tx, cursor string) error {
	if cursor == "" {
		return nil
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES (?, ?)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value`, cursorKey, cursor)
	return err
}
