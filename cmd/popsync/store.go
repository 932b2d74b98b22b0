package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"popsync/configs"
	"popsync/fetch"
	"popsync/internal/metrics"
	"popsync/state"
	"popsync/state/postgres"
)

// store is the state a command opened: an SQLite file or, with [state]
// url, the PostgreSQL database of a fleet (fleet is then set).
type store struct {
	state.Store
	tokens fetch.TokenStore
	fleet  *postgres.Store // nil for SQLite
}

// Unwrap returns the store itself: the wrapper changes none of its
// methods, so the fetcher may use what it offers beyond state.Store
// (state.IntentRecorderOf).
func (s *store) Unwrap() state.Store { return s.Store }

// Tokens returns the store's OAuth 2.0 token table.
func (s *store) Tokens() fetch.TokenStore { return s.tokens }

// openStore opens the store of cfg for a command that is no daemon of a
// fleet.
func openStore(ctx context.Context, cfg *configs.Config) (*store, error) {
	return openStoreAs(ctx, cfg, postgres.Options{})
}

// openStoreAs opens the store of cfg; opts apply to PostgreSQL only.
func openStoreAs(ctx context.Context, cfg *configs.Config, opts postgres.Options) (*store, error) {
	if !cfg.State.Fleet() {
		st, err := state.OpenSQLite(ctx, cfg.State.Path)
		if err != nil {
			return nil, &stateError{err}
		}
		return &store{Store: st, tokens: st.Tokens()}, nil
	}
	if opts.LeaseTTL == 0 {
		opts.LeaseTTL = cfg.State.LeaseTTL.D()
	}
	pg, err := postgres.Open(ctx, cfg.State.URL, opts)
	if err != nil {
		// postgres.Open names the database without its password.
		return nil, &stateError{err}
	}
	return &store{Store: pg, tokens: pg.Tokens(), fleet: pg}, nil
}

// fleetOptions are the options of a daemon's PostgreSQL store.
func fleetOptions(log *slog.Logger) postgres.Options {
	return postgres.Options{RequireLease: true, Logger: log}
}

// fleetStatus is the fleet part of a `popsync status` row: who holds the
// account's lease and until when, and when the fleet polls it next.
type fleetStatus struct {
	Daemon  string    `json:"daemon,omitempty"` // holding the lease now; empty when free
	Until   time.Time `json:"lease_until,omitzero"`
	Token   int64     `json:"fencing_token"`
	NextDue time.Time `json:"next_due,omitzero"`
}

// fleetRows are the fleet states of a fleet store's accounts; nil for
// SQLite.
type fleetRows map[state.Account]*fleetStatus

func fleetLeases(ctx context.Context, st *store) (fleetRows, error) {
	if st.fleet == nil {
		return nil, nil
	}
	all, err := st.fleet.Leases(ctx)
	if err != nil {
		return nil, err
	}
	out := make(fleetRows, len(all))
	for _, li := range all {
		fs := &fleetStatus{Daemon: li.Owner, Token: li.Token, NextDue: li.NextDue}
		if li.Owner != "" {
			fs.Until = li.Expires
		}
		out[li.Account] = fs
	}
	return out, nil
}

// of returns the fleet state of a; a zero one for an account no daemon
// scheduled yet, nil without a fleet.
func (r fleetRows) of(a *configs.Account) *fleetStatus {
	if r == nil {
		return nil
	}
	if fs := r[a.Identity()]; fs != nil {
		return fs
	}
	return &fleetStatus{}
}

// nextText is the NEXT DUE column.
func (fs *fleetStatus) nextText() string {
	if fs.NextDue.IsZero() {
		return "not scheduled"
	}
	return when(fs.NextDue)
}

// leaseText is the LEASE column.
func (fs *fleetStatus) leaseText() string {
	if fs.Daemon == "" {
		return "free"
	}
	return fs.Daemon + " until " + fs.Until.Local().Format("15:04:05")
}

// registerFleetMetrics exports the daemon's fleet counters.
func (d *daemon) registerFleetMetrics(pg *postgres.Store) {
	stat := func(v func(postgres.Stats) float64) func() []metrics.Sample {
		return func() []metrics.Sample { return []metrics.Sample{{Value: v(pg.Stats())}} }
	}
	d.reg.GaugeFunc("popsync_fleet_leases_held", "Account leases this daemon holds now.", nil,
		stat(func(s postgres.Stats) float64 { return float64(s.LeasesHeld) }))
	d.reg.GaugeFunc("popsync_fleet_takeovers_total", "Leases this daemon took over from a daemon whose lease had expired (a counter).", nil,
		stat(func(s postgres.Stats) float64 { return float64(s.Takeovers) }))
	d.reg.GaugeFunc("popsync_fleet_fenced_commits_refused_total", "Writes refused because this daemon no longer held the account's lease (a counter).", nil,
		stat(func(s postgres.Stats) float64 { return float64(s.Refused) }))
	d.reg.GaugeFunc("popsync_fleet_leases_lost_total", "Leases this daemon lost before it released them: expired, taken over, or not renewable in time (a counter).", nil,
		stat(func(s postgres.Stats) float64 { return float64(s.Lost) }))
}

func copyState(ctx context.Context, stdout io.Writer, from, to string, force bool) error {
	if _, err := os.Stat(from); err != nil {
		// OpenSQLite would create a new, empty file.
		return &stateError{fmt.Errorf("copying state: %w", err)}
	}
	src, err := state.OpenSQLite(ctx, from)
	if err != nil {
		return &stateError{err}
	}
	defer src.Close()
	dst, err := postgres.Open(ctx, to, postgres.Options{})
	if err != nil {
		return &stateError{err}
	}
	defer dst.Close()
	n, err := dst.CopyFrom(ctx, src, postgres.CopyOptions{Force: force})
	if errors.Is(err, postgres.ErrNotEmpty) {
		return &stateError{fmt.Errorf("%w; nothing was copied (--force copies over the accounts it holds)", err)}
	}
	if err != nil {
		return &stateError{err}
	}
	copied, kept, err := copyTokens(ctx, src, dst, force)
	if err != nil {
		return &stateError{err}
	}
	fmt.Fprintf(stdout, "copied %s into %s: %d accounts, %d records, %d open intents, %d polls, %d OAuth 2.0 tokens\n",
		from, dst, n.Accounts, n.Records, n.Intents, n.Polls, copied)
	if kept > 0 {
		fmt.Fprintf(stdout, "kept %d OAuth 2.0 tokens the database holds already (--force replaces them)\n", kept)
	}
	return nil
}
