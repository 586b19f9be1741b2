// Package records owns the containers table: each renter's container as
// stored (who owns it, what it runs, its state, its balance and meter). It
// is the only package that writes that table; the deployer changes states
// through it, and billing changes balances and meters through its
// transaction functions (Credit, SetAccount, StartMeter), inside billing's
// own transactions, so a credit and the state it changes commit together.
// Its queries may read other tables (an invoice's expiry, a ledger row's
// existence) but never write them.
//
// It runs inside the enclave.
package records

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nbd-wtf/go-nostr/nip19"

	"github.com/enclaved/enclaved/money"
	"github.com/enclaved/enclaved/nip"
	"github.com/enclaved/enclaved/store"
)

// Container states, as stored.
const (
	StateQuoted   = "quoted"   // invoice issued, not paid
	StatePaid     = "paid"     // credited, waiting to start (or for capacity)
	StateRunning  = "running"  // metered
	StatePaused   = "paused"   // balance reached zero; data kept for the retention window
	StateStopped  = "stopped"  // stopped by its owner; data kept
	StateRemoved  = "removed"  // gone from the runtime
	StateFailed   = "failed"   // could not be started; balance kept
	StateExpired  = "expired"  // quote never paid
	StateExited   = "exited"   // stopped on its own (exit, OOM kill, gone from the runtime); not charged; data kept for the retention window
	StateStarting = "starting" // being pulled and created
)

// States are every container state, in the order of a container's life.
var States = []string{StateQuoted, StateExpired, StatePaid, StateStarting, StateRunning, StatePaused,
	StateStopped, StateExited, StateFailed, StateRemoved}

// Unit is the resources of one unit; a container gets units × Unit.
type Unit struct {
	NanoCPUs    int64
	MemoryBytes int64
	Pids        int64
	DiskBytes   int64
}

// Record is a container's stored state.
type Record struct {
	ID, Name, Owner, Channel, Image, ImageRef string
	Pubkey                                    string // the container's own identity (hex)
	Units, PriceMsat, BalanceMsat             int64
	State, Reason, DockerID                   string
	Env                                       [][2]string
	Egress                                    []string  // "host:port" the container may reach
	HTTPPort                                  int       // served by host name; 0: none
	CommandAt                                 time.Time // when the last owner's command carried out was sent (to the second)
	HasVolumes                                bool
	AdminPublic                               bool // the owner agreed to be named admin in public (admin=yes)
	PausedAt                                  time.Time
	RunMs, ChargedMsat                        int64
	CreatedAt                                 time.Time
	RunningSince                              time.Time // start of the not yet charged stretch; zero unless running
}

// PaidUntil is when a running container's balance runs out; zero if it is
// not running.
func (r Record) PaidUntil() time.Time {
	if r.RunningSince.IsZero() {
		return time.Time{}
	}
	return r.RunningSince.Add(r.Left())
}

// LeftAt is the running time left at now: for a running container, Left
// less what ran since the last charge.
func (r Record) LeftAt(now time.Time) time.Duration {
	if r.RunningSince.IsZero() {
		return r.Left()
	}
	return max(r.PaidUntil().Sub(now), 0)
}

// BalanceAt is the balance at now: for a running container, less what it
// ran since its last charge (metering charges a running container only
// every so often, and when it must stop).
func (r Record) BalanceAt(now time.Time) int64 {
	if r.RunningSince.IsZero() || !now.After(r.RunningSince) {
		return r.BalanceMsat
	}
	rate := money.Rate(r.Units, r.PriceMsat)
	due := money.ChargeFor(rate, r.RunMs+now.Sub(r.RunningSince).Milliseconds()) - r.ChargedMsat
	return max(r.BalanceMsat-max(due, 0), 0)
}

// Npub is the container's own identity, bech32.
func (r Record) Npub() string {
	if r.Pubkey == "" {
		return ""
	}
	return nip.Npub(r.Pubkey)
}

// Left is the running time the balance still pays for.
func (r Record) Left() time.Duration {
	return money.TimeLeft(money.Rate(r.Units, r.PriceMsat), r.BalanceMsat, r.ChargedMsat, r.RunMs)
}

// ErrNotFound is returned for an unknown container.
var ErrNotFound = errors.New("no such container")

// UserError is a reason a request is refused, meant for the renter.
type UserError struct{ Msg string }

func (e *UserError) Error() string { return e.Msg }

// Store reads and writes the containers table.
type Store struct {
	db  *store.DB
	now func() time.Time
}

// New returns the records of db; now is the clock of their updated_at.
func New(db *store.DB, now func() time.Time) *Store { return &Store{db: db, now: now} }

// Get reads a container record.
func (s *Store) Get(ctx context.Context, id string) (Record, error) {
	var r Record
	var env, egress string
	var paused, since sql.NullInt64
	var created, commandAt int64
	err := s.db.QueryRowContext(ctx, `SELECT id, name, owner, channel, image, image_ref, pubkey, units, price_msat, balance_msat,
		state, state_reason, docker_id, env, paused_at, run_ms, charged_msat, image_volumes, created_at, running_since, egress, http_port, command_at, admin_public
		FROM containers WHERE id = ?`, id).Scan(
		&r.ID, &r.Name, &r.Owner, &r.Channel, &r.Image, &r.ImageRef, &r.Pubkey, &r.Units, &r.PriceMsat, &r.BalanceMsat,
		&r.State, &r.Reason, &r.DockerID, &env, &paused, &r.RunMs, &r.ChargedMsat, &r.HasVolumes, &created, &since, &egress, &r.HTTPPort, &commandAt, &r.AdminPublic)
	r.CreatedAt = time.UnixMilli(created)
	if commandAt > 0 {
		r.CommandAt = time.Unix(commandAt, 0)
	}
	if errors.Is(err, sql.ErrNoRows) {
		return r, ErrNotFound
	}
	if err != nil {
		return r, err
	}
	if paused.Valid {
		r.PausedAt = time.UnixMilli(paused.Int64)
	}
	if since.Valid {
		r.RunningSince = time.UnixMilli(since.Int64)
	}
	if err := json.Unmarshal([]byte(env), &r.Env); err != nil {
		return r, fmt.Errorf("container %s env: %w", id, err)
	}
	if err := json.Unmarshal([]byte(egress), &r.Egress); err != nil {
		return r, fmt.Errorf("container %s egress: %w", id, err)
	}
	return r, nil
}

// Find returns the container named target, or whose npub (or hex pubkey)
// is target. Removed and expired records are found too; callers decide.
func (s *Store) Find(ctx context.Context, target string) (Record, error) {
	col, val := "name", target
	if strings.HasPrefix(target, "npub1") {
		prefix, v, err := nip19.Decode(target)
		if err != nil || prefix != "npub" {
			return Record{}, &UserError{fmt.Sprintf("%s is not a valid npub", clip(target, 20))}
		}
		col, val = "pubkey", v.(string)
	} else if len(target) == 64 {
		col = "pubkey"
	}
	var id string
	err := s.db.QueryRowContext(ctx, `SELECT id FROM containers WHERE `+col+` = ?`, val).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && val == "") {
		return Record{}, ErrNotFound
	}
	if err != nil {
		return Record{}, err
	}
	return s.Get(ctx, id)
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// Owned returns the owner's containers that are not gone (neither removed
// nor expired), oldest first.
func (s *Store) Owned(ctx context.Context, owner string) ([]Record, error) {
	return s.list(ctx, `SELECT id FROM containers WHERE owner = ? AND state NOT IN ('removed', 'expired')
		ORDER BY created_at, id LIMIT 100`, owner)
}

// Live returns every paid container that is not removed.
func (s *Store) Live(ctx context.Context) ([]Record, error) {
	return s.list(ctx, `SELECT id FROM containers WHERE state NOT IN ('removed', 'expired', 'quoted') ORDER BY created_at, id`)
}

func (s *Store) list(ctx context.Context, query string, args ...any) ([]Record, error) {
	ids, err := s.db.Strings(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	recs := make([]Record, 0, len(ids))
	for _, id := range ids {
		r, err := s.Get(ctx, id)
		if err != nil {
			return nil, err
		}
		recs = append(recs, r)
	}
	return recs, nil
}

// CountByState counts the containers in each state (a state none is in
// is absent).
func (s *Store) CountByState(ctx context.Context) (map[string]int64, error) {
	return s.db.Counts(ctx, `SELECT state, COUNT(*) FROM containers GROUP BY state`)
}

// InState lists the ids of the containers in any of states, in id order.
func (s *Store) InState(ctx context.Context, states ...string) ([]string, error) {
	if len(states) == 0 {
		return nil, nil
	}
	args := make([]any, len(states))
	for i, st := range states {
		args[i] = st
	}
	return s.db.Strings(ctx, `SELECT id FROM containers WHERE state IN (?`+strings.Repeat(", ?", len(states)-1)+`) ORDER BY id`, args...)
}

// keptStates are the states of containers that may run again.
const keptStates = `'running','paused','stopped','starting','paid'`

// WithVolumes lists the containers whose volumes a backup keeps: those
// whose image declares volumes, that were created and may run again.
func (s *Store) WithVolumes(ctx context.Context) ([]string, error) {
	return s.db.Strings(ctx, `SELECT id FROM containers WHERE image_volumes = 1 AND docker_id != '' AND state IN (`+keptStates+`) ORDER BY id`)
}

// MayRunAgain says whether container id may still run (its volumes are
// worth keeping).
func (s *Store) MayRunAgain(ctx context.Context, id string) (bool, error) {
	var live bool
	err := s.db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM containers WHERE id = ? AND state IN (`+keptStates+`))`, id).Scan(&live)
	return live, err
}

// UsedUnits counts the units held by containers that run or may resume,
// except container except.
func (s *Store) UsedUnits(ctx context.Context, except string) (int64, error) {
	var n int64
	err := s.db.QueryRowContext(ctx, `SELECT COALESCE(SUM(units), 0) FROM containers
		WHERE state IN ('running', 'starting', 'paused', 'stopped', 'exited') AND id != ?`, except).Scan(&n)
	return n, err
}

// ImageInUse says whether a container that is not gone uses image ref.
func (s *Store) ImageInUse(ctx context.Context, ref string) (bool, error) {
	var users int
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM containers WHERE image_ref = ?
		AND state NOT IN ('removed', 'expired', 'quoted')`, ref).Scan(&users)
	return users > 0, err
}

// RemovedImages lists (at most limit) images of containers removed since.
func (s *Store) RemovedImages(ctx context.Context, since time.Time, limit int) ([]string, error) {
	return s.db.Strings(ctx, `SELECT DISTINCT image_ref FROM containers WHERE state = 'removed' AND updated_at > ? LIMIT ?`,
		since.UnixMilli(), limit)
}
