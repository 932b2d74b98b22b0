package postgres

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"popsync/state"
)

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want error
	}{
		{&pgconn.PgError{Code: fenceCode}, state.ErrLeaseLost},
		{&pgconn.PgError{Code: "40001"}, state.ErrBusy}, // serialization_failure
		{&pgconn.PgError{Code: "40P01"}, state.ErrBusy}, // deadlock_detected
		{&pgconn.PgError{Code: "55P03"}, state.ErrBusy}, // lock_not_available
		{&pgconn.PgError{Code: "57014"}, state.ErrBusy}, // query_canceled (statement_timeout)
		{&pgconn.PgError{Code: "57P01"}, state.ErrBusy}, // admin_shutdown
		{&pgconn.PgError{Code: "08006"}, state.ErrBusy}, // connection_failure
		{&pgconn.PgError{Code: "XX001"}, state.ErrCorrupt},
		{&pgconn.PgError{Code: "25006"}, state.ErrReadOnly},
		{&pgconn.PgError{Code: "42501"}, state.ErrReadOnly},
		{fmt.Errorf("dialing: %w", &net.OpError{Op: "dial", Err: errors.New("connection refused")}), state.ErrBusy},
	} {
		got := classify(tc.err)
		if !errors.Is(got, tc.want) || !errors.Is(got, tc.err) {
			t.Errorf("classify(%v) = %v, want it to wrap %v and the cause", tc.err, got, tc.want)
		}
	}
	for _, err := range []error{&pgconn.PgError{Code: "23505"}, context.Canceled, errors.New("other")} {
		got := classify(err)
		for _, s := range []error{state.ErrBusy, state.ErrLeaseLost, state.ErrCorrupt, state.ErrReadOnly} {
			if errors.Is(got, s) {
				t.Errorf("classify(%v) = %v: wraps %v", err, got, s)
			}
		}
	}
}
