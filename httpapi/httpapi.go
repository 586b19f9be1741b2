// Package httpapi serves the instance's read-only HTTP API: the instance's
// public facts (GET /api/v1/instance) and a container's public status
// (GET /api/v1/containers/{npub}). Nothing private (owners' env, logs, DMs)
// is reachable here.
//
// It runs inside the enclave; in production TLS terminates in the enclave
// too, so the parent forwards only ciphertext.
package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/enclaved/enclaved/records"
)

// Containers is what the API reads from the deployer.
type Containers interface {
	Find(ctx context.Context, target string) (records.Record, error)
}

// Capacity is the instance's free capacity (deployer.Deployer).
type Capacity interface {
	FreeUnits(ctx context.Context) (int64, error)
}

// Instance is the static part of GET /api/v1/instance.
type Instance struct {
	Pubkey          string   `json:"pubkey"`
	Npub            string   `json:"npub"`
	Relays          []string `json:"relays"`
	Version         string   `json:"version"`
	Unit            Unit     `json:"unit"`
	MsatPerUnitHour int64    `json:"price_msat_per_unit_hour"`
	CapacityUnits   int64    `json:"capacity_units"`
	Dev             bool     `json:"dev"`
}

// Unit is one unit's resources as JSON.
type Unit struct {
	NanoCPUs     int64 `json:"nano_cpus"`
	MemoryBytes  int64 `json:"memory_bytes"`
	Pids         int64 `json:"pids"`
	DiskBytes    int64 `json:"disk_bytes"`
	DiskEnforced bool  `json:"disk_enforced"`
}

// UnitJSON converts a deployer unit.
func UnitJSON(u records.Unit, diskEnforced bool) Unit {
	return Unit{NanoCPUs: u.NanoCPUs, MemoryBytes: u.MemoryBytes, Pids: u.Pids, DiskBytes: u.DiskBytes, DiskEnforced: diskEnforced}
}

// InstanceNow is GET /api/v1/instance: the instance's static facts and
// its free capacity now (the RPC's instance method answers the same).
type InstanceNow struct {
	Instance
	FreeUnits int64 `json:"free_units"`
}

// Container is GET /api/v1/containers/{npub}.
type Container struct {
	Npub        string     `json:"npub"`
	Name        string     `json:"name"`
	State       string     `json:"state"`
	Image       string     `json:"image"` // pinned: repository@sha256:…
	Units       int64      `json:"units"`
	BalanceMsat int64      `json:"balance_msat"`
	PaidUntil   *time.Time `json:"paid_until,omitempty"` // running containers only
}

// New returns the API handler; mounts add more routes (LNURL, NIP-05).
func New(inst Instance, c Containers, capacity Capacity, now func() time.Time, mounts ...func(*http.ServeMux)) http.Handler {
	mux := http.NewServeMux()
	for _, m := range mounts {
		m(mux)
	}
	mux.HandleFunc("GET /api/v1/instance", func(w http.ResponseWriter, r *http.Request) {
		free, err := capacity.FreeUnits(r.Context())
		if err != nil {
			writeError(w, http.StatusInternalServerError, "capacity unavailable")
			return
		}
		WriteJSON(w, http.StatusOK, InstanceNow{Instance: inst, FreeUnits: max(free, 0)})
	})
	mux.HandleFunc("GET /api/v1/containers/{npub}", func(w http.ResponseWriter, r *http.Request) {
		npub := r.PathValue("npub")
		if !strings.HasPrefix(npub, "npub1") || len(npub) > 100 {
			writeError(w, http.StatusBadRequest, "want a container npub")
			return
		}
		rec, err := c.Find(r.Context(), npub)
		var ue *records.UserError
		switch {
		case errors.As(err, &ue):
			writeError(w, http.StatusBadRequest, ue.Msg)
			return
		case errors.Is(err, records.ErrNotFound):
			writeError(w, http.StatusNotFound, "no such container")
			return
		case err != nil:
			writeError(w, http.StatusInternalServerError, "lookup failed")
			return
		}
		out := Container{Npub: rec.Npub(), Name: rec.Name, State: rec.State, Image: rec.ImageRef, Units: rec.Units, BalanceMsat: rec.BalanceAt(now())}
		if t := rec.PaidUntil(); !t.IsZero() {
			t = t.UTC().Truncate(time.Second)
			out.PaidUntil = &t
		}
		WriteJSON(w, http.StatusOK, out)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not found: see /api/v1/instance")
	})
	return mux
}

// WriteJSON answers with v as JSON, readable from any origin (the API and
// the LNURL endpoints are public).
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Access-Control-Allow-Origin", "*")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	WriteJSON(w, status, map[string]string{"error": msg})
}
