package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/enclaved/enclaved/billing"
	"github.com/enclaved/enclaved/store"
)

// runAudit checks an instance's database, reading only: every balance
// against its ledger and the money invariants (billing.Audit), and lists
// the unclaimed payments the operator owes back.
func runAudit(ctx context.Context, args []string, stdout, stderr io.Writer, environ []string) error {
	fs := newFlagSet("audit", `Audits an instance's database without changing it (safe while the instance
runs): recomputes every balance from the ledger and checks the money
invariants, printing each as pass or FAIL, then lists unclaimed payments
(paid after their container was removed: the operator's to return). Exit
status 0 only if every check passes.`, stderr)
	load := configFlags(fs, environ)
	dbPath := fs.String("db", "", "the database file (default <data dir>/enclaved.db)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := load()
	if err != nil {
		return err
	}
	if *dbPath == "" {
		*dbPath = filepath.Join(cfg.DataDir, "enclaved.db")
	}
	db, err := store.OpenReadOnly(ctx, *dbPath)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	defer db.Close()
	rep, err := billing.Audit(ctx, db.DB, billing.AuditLimits{Now: time.Now(), Interval: time.Minute,
		Retention: cfg.Pricing.Retention, Capacity: cfg.Instance.CapacityUnits})
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(stdout, "audit of %s\n", db.Path)
		for _, c := range rep.Checks {
			if c.OK() {
				fmt.Fprintf(stdout, "pass  %s\n", c.Name)
				continue
			}
			fmt.Fprintf(stdout, "FAIL  %s\n", c.Name)
			for _, f := range c.Failures {
				fmt.Fprintf(stdout, "        %s\n", f)
			}
		}
		var sum int64
		for _, u := range rep.Unclaimed {
			sum += u.AmountMsat
		}
		fmt.Fprintf(stdout, "unclaimed payments: %d, %d msat\n", len(rep.Unclaimed), sum)
		for _, u := range rep.Unclaimed {
			who := u.Requester
			if who == "" {
				who = "unknown payer"
			}
			fmt.Fprintf(stdout, "  %s  %d msat for container %s, from %s, at %s\n", u.PaymentHash, u.AmountMsat, u.ContainerID, who,
				u.At.UTC().Format(time.RFC3339))
		}
	}
	if !rep.OK() {
		return errors.New("audit: some checks failed")
	}
	return nil
}
