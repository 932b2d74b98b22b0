package schedule_test

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"popsync/configs"
	"popsync/fetch"
	"popsync/internal/credential/oauth"
	"popsync/internal/metrics"
	"popsync/schedule"
)

func TestClassifyOAuth2(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("x: %w", &oauth.LoginNeededError{Name: "work", Reason: "invalid_grant"}), schedule.OutcomeLoginNeeded},
		{&oauth.TemporaryError{Op: "refreshing", Err: errors.New("503")}, schedule.OutcomeError},
		{&oauth.ServerError{Op: "refreshing", Status: 401, Code: "invalid_client"}, schedule.OutcomeAuth},
		{fmt.Errorf("%w: client_id: missing", oauth.ErrBadConfig), schedule.OutcomeAuth},
	} {
		if got := schedule.OutcomeOf(c.err); got != c.want {
			t.Errorf("%v: outcome %q, want %q", c.err, got, c.want)
		}
	}
}

// An account that needs `popsync login` keeps its schedule (its polls fail
// locally, that is how a login is noticed), is reported loudly once per
// streak, and shows in the metrics until a poll succeeds.
func TestSchedulerLoginNeeded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		need := &oauth.LoginNeededError{Name: "x", Reason: "invalid_grant"}
		fails := map[int]error{0: need, 1: need, 2: need}
		fake := newSchedFake(func(_ string, n int) schedStep {
			return schedStep{rep: fetch.PollReport{Result: fetch.Result{Err: fails[n]}}}
		})
		logs := &schedLogs{}
		reg := metrics.NewRegistry()
		m := schedule.NewMetrics(reg)
		r := startSched(t, schedule.Options{Poll: fake.poll, Jitter: schedNoJitter, Logger: slog.New(logs), Metrics: m},
			schedule.Settings{Accounts: []*configs.Account{schedAccount("x", "@every 5m", true)}, MaxParallel: 1})
		schedSleepUntil(11 * time.Minute)
		if v := metricOf(t, reg, `popsync_login_needed{account="x"}`); v != 1 {
			t.Errorf("popsync_login_needed = %v while login is needed", v)
		}
		schedSleepUntil(16 * time.Minute)
		r.stop()
		if got, want := fake.starts("x"), schedMins(0, 5, 10, 15); !slices.Equal(got, want) {
			t.Errorf("polls at %v\nwant      %v", got, want)
		}
		if n := logs.count(slog.LevelError, "oauth2 login needed: the account is not polled until `popsync login x` is run; other accounts go on"); n != 1 {
			t.Errorf("%d loud login-needed reports, want 1", n)
		}
		if v := metricOf(t, reg, `popsync_login_needed{account="x"}`); v != 0 {
			t.Errorf("popsync_login_needed = %v after a successful poll", v)
		}
		if v := metricOf(t, reg, `popsync_polls_total{account="x",outcome="login_needed"}`); v != 3 {
			t.Errorf("login_needed polls = %v, want 3", v)
		}
	})
}

// metricOf reads one series from the registry's exposition.
func metricOf(t *testing.T, reg *metrics.Registry, series string) float64 {
	t.Helper()
	var b strings.Builder
	reg.WriteTo(&b)
	for l := range strings.Lines(b.String()) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", series, err)
			}
			return f
		}
	}
	t.Fatalf("no series %s in:\n%s", series, b.String())
	return 0
}
