package metrics

import (
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestExposition(t *testing.T) {
	r := NewRegistry()
	c := r.Counter("app_fetched_total", "Messages fetched.", "account")
	g := r.Gauge("app_failures", "Consecutive failures.\nReset on success.", "account")
	h := r.Histogram("app_poll_seconds", "Poll duration.", []float64{1, 0.5, 5}, "account")
	r.GaugeFunc("app_seen", `Seen set \ size.`, []string{"account"}, func() []Sample {
		return []Sample{{Labels: []string{"z"}, Value: 3}, {Labels: []string{"a"}, Value: 7}, {Labels: []string{"bad", "arity"}}}
	})
	r.Gauge("app_up", "Running.").Set(1)

	c.Add(2, "work")
	c.Inc("home")
	c.Inc("home")
	g.Set(4, `we"ird\name`+"\n")
	h.Observe(0.5, "home") // on a bound: counts in that bucket
	h.Observe(0.7, "home")
	h.Observe(100, "home") // only +Inf
	h.Touch("work")

	var b strings.Builder
	n, err := r.WriteTo(&b)
	if err != nil || n != int64(b.Len()) {
		t.Fatalf("WriteTo = %d, %v; wrote %d", n, err, b.Len())
	}
	want := `# HELP app_fetched_total Messages fetched.
# TYPE app_fetched_total counter
app_fetched_total{account="home"} 2
app_fetched_total{account="work"} 2
# HELP app_failures Consecutive failures.\nReset on success.
# TYPE app_failures gauge
app_failures{account="we\"ird\\name\n"} 4
# HELP app_poll_seconds Poll duration.
# TYPE app_poll_seconds histogram
app_poll_seconds_bucket{account="home",le="0.5"} 1
app_poll_seconds_bucket{account="home",le="1"} 2
app_poll_seconds_bucket{account="home",le="5"} 2
app_poll_seconds_bucket{account="home",le="+Inf"} 3
app_poll_seconds_sum{account="home"} 101.2
app_poll_seconds_count{account="home"} 3
app_poll_seconds_bucket{account="work",le="0.5"} 0
app_poll_seconds_bucket{account="work",le="1"} 0
app_poll_seconds_bucket{account="work",le="5"} 0
app_poll_seconds_bucket{account="work",le="+Inf"} 0
app_poll_seconds_sum{account="work"} 0
app_poll_seconds_count{account="work"} 0
# HELP app_seen Seen set \\ size.
# TYPE app_seen gauge
app_seen{account="a"} 7
app_seen{account="z"} 3
# HELP app_up Running.
# TYPE app_up gauge
app_up 1
`
	if b.String() != want {
		t.Errorf("exposition:\n%s\nwant:\n%s", b.String(), want)
	}
	if got := c.Value("home"); got != 2 {
		t.Errorf("Value = %v", got)
	}
	if got := h.Count("home"); got != 3 {
		t.Errorf("Count = %v", got)
	}

	c.DeleteMatching("account", "home")
	h.DeleteMatching("account", "home")
	b.Reset()
	r.WriteTo(&b)
	if strings.Contains(b.String(), `account="home"`) {
		t.Errorf("deleted series still written:\n%s", b.String())
	}
}

func TestFormatFloat(t *testing.T) {
	for v, want := range map[float64]string{
		1: "1", 0.25: "0.25", 1.7e9: "1.7e+09", math.Inf(1): "+Inf", math.Inf(-1): "-Inf", math.NaN(): "NaN",
	} {
		if got := formatFloat(v); got != want {
			t.Errorf("formatFloat(%v) = %q, want %q", v, got, want)
		}
	}
}

func TestMisuse(t *testing.T) {
	r := NewRegistry()
	c := r.Counter("x_total", "x", "a")
	mustPanic(t, "negative counter", func() { c.Add(-1, "v") })
	mustPanic(t, "Set on counter", func() { c.Set(1, "v") })
	mustPanic(t, "label arity", func() { c.Inc() })
	mustPanic(t, "duplicate family", func() { r.Gauge("x_total", "again") })
}

func mustPanic(t *testing.T, what string, f func()) {
	t.Helper()
	defer func() {
		if recover() == nil {
			t.Errorf("%s: no panic", what)
		}
	}()
	f()
}

func TestServeHTTP(t *testing.T) {
	r := NewRegistry()
	r.Counter("x_total", "x").Inc()
	srv := httptest.NewServer(r)
	defer srv.Close()

	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != ContentType || !strings.Contains(string(body), "x_total 1\n") {
		t.Errorf("GET: %d %q\n%s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	resp, err = http.Post(srv.URL, "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d", resp.StatusCode)
	}
}
