// Package metrics keeps counters, gauges and histograms with labels and
// writes them in the Prometheus text exposition format (version 0.0.4), so
// that `popsync run` can serve /metrics without a client library.
//
// It is responsible for the bookkeeping and the exact text format: HELP and
// TYPE lines, label escaping, cumulative histogram buckets, a stable order.
// It is not responsible for what is measured (package fetch decides), nor
// for serving HTTP beyond the one handler (cmd/popsync runs the server).
package metrics

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// ContentType is the media type of the text exposition format.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

// Kind is the TYPE of a metric family.
type Kind string

// Kinds of metric families.
const (
	KindCounter   Kind = "counter"
	KindGauge     Kind = "gauge"
	KindHistogram Kind = "histogram"
)

// Sample is one value of a metric computed at scrape time by a GaugeFunc.
type Sample struct {
	Labels []string // values, in the order of the family's label names
	Value  float64
}

// Registry holds metric families and writes them. It is safe for
// concurrent use.
type Registry struct {
	mu       sync.Mutex
	families []family
	names    map[string]bool
}

type family interface {
	write(w *bufio.Writer)
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{names: make(map[string]bool)}
}

func (r *Registry) add(name string, f family) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.names[name] {
		panic("metrics: family " + name + " registered twice")
	}
	r.names[name] = true
	r.families = append(r.families, f)
}

// Counter registers a counter family: a value that only goes up.
func (r *Registry) Counter(name, help string, labels ...string) *Vec {
	v := newVec(name, help, KindCounter, labels)
	r.add(name, v)
	return v
}

// Gauge registers a gauge family: a value that goes up and down.
func (r *Registry) Gauge(name, help string, labels ...string) *Vec {
	v := newVec(name, help, KindGauge, labels)
	r.add(name, v)
	return v
}

// GaugeFunc registers a gauge family whose samples fn computes at every
// scrape. fn must return promptly; it runs while the response is written.
func (r *Registry) GaugeFunc(name, help string, labels []string, fn func() []Sample) {
	r.add(name, &funcFamily{name: name, help: help, labels: append([]string(nil), labels...), fn: fn})
}

// Histogram registers a histogram family with the given upper bounds
// (sorted ascending; +Inf is implied).
func (r *Registry) Histogram(name, help string, buckets []float64, labels ...string) *HistogramVec {
	b := append([]float64(nil), buckets...)
	slices.Sort(b)
	h := &HistogramVec{name: name, help: help, labels: append([]string(nil), labels...), buckets: b,
		series: make(map[string]*histSeries)}
	r.add(name, h)
	return h
}

// WriteTo writes every family in registration order, each series sorted
// by its label values.
func (r *Registry) WriteTo(w io.Writer) (int64, error) {
	r.mu.Lock()
	fams := append([]family(nil), r.families...)
	r.mu.Unlock()
	cw := &countingWriter{w: w}
	bw := bufio.NewWriter(cw)
	for _, f := range fams {
		f.write(bw)
	}
	err := bw.Flush()
	return cw.n, err
}

// ServeHTTP serves the registry as a scrape target.
func (r *Registry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Content-Type", ContentType)
	if req.Method == http.MethodHead {
		return
	}
	_, _ = r.WriteTo(w)
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// Vec is a counter or gauge family: one value per combination of label
// values.
type Vec struct {
	name, help string
	kind       Kind
	labels     []string

	mu     sync.Mutex
	series map[string]*series
}

type series struct {
	labels []string
	value  float64
}

func newVec(name, help string, kind Kind, labels []string) *Vec {
	return &Vec{name: name, help: help, kind: kind, labels: append([]string(nil), labels...),
		series: make(map[string]*series)}
}

// key joins label values; NUL cannot be confused with a value's bytes in
// a map key since every value is followed by one.
func key(values []string) string {
	var b strings.Builder
	for _, v := range values {
		b.WriteString(v)
		b.WriteByte(0)
	}
	return b.String()
}

func (v *Vec) get(values []string) *series {
	if len(values) != len(v.labels) {
		panic(fmt.Sprintf("metrics: %s takes %d label values, got %d", v.name, len(v.labels), len(values)))
	}
	k := key(values)
	s := v.series[k]
	if s == nil {
		s = &series{labels: append([]string(nil), values...)}
		v.series[k] = s
	}
	return s
}

// Add adds delta to the series with the given label values. A counter
// refuses a negative delta (it panics: that is a bug in the caller).
func (v *Vec) Add(delta float64, values ...string) {
	if v.kind == KindCounter && delta < 0 {
		panic("metrics: counter " + v.name + " cannot decrease")
	}
	v.mu.Lock()
	v.get(values).value += delta
	v.mu.Unlock()
}

// Inc adds 1.
func (v *Vec) Inc(values ...string) { v.Add(1, values...) }

// Set sets a gauge. On a counter it panics.
func (v *Vec) Set(val float64, values ...string) {
	if v.kind != KindGauge {
		panic("metrics: Set on " + string(v.kind) + " " + v.name)
	}
	v.mu.Lock()
	v.get(values).value = val
	v.mu.Unlock()
}

// Value returns the value of a series, 0 when it does not exist.
func (v *Vec) Value(values ...string) float64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	if s := v.series[key(values)]; s != nil {
		return s.value
	}
	return 0
}

// DeleteMatching removes every series whose value of label is value.
func (v *Vec) DeleteMatching(label, value string) {
	i := slices.Index(v.labels, label)
	if i < 0 {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	for k, s := range v.series {
		if s.labels[i] == value {
			delete(v.series, k)
		}
	}
}

func (v *Vec) write(w *bufio.Writer) {
	v.mu.Lock()
	list := make([]series, 0, len(v.series))
	for _, s := range v.series {
		list = append(list, *s)
	}
	v.mu.Unlock()
	slices.SortFunc(list, func(a, b series) int { return slices.Compare(a.labels, b.labels) })
	header(w, v.name, v.help, v.kind)
	for _, s := range list {
		line(w, v.name, v.labels, s.labels, "", "", s.value)
	}
}

type funcFamily struct {
	name, help string
	labels     []string
	fn         func() []Sample
}

func (f *funcFamily) write(w *bufio.Writer) {
	samples := f.fn()
	slices.SortFunc(samples, func(a, b Sample) int { return slices.Compare(a.Labels, b.Labels) })
	header(w, f.name, f.help, KindGauge)
	for _, s := range samples {
		if len(s.Labels) != len(f.labels) {
			continue
		}
		line(w, f.name, f.labels, s.Labels, "", "", s.Value)
	}
}

// HistogramVec is a histogram family: per combination of label values, a
// count of observations per bucket, their sum and their number.
type HistogramVec struct {
	name, help string
	labels     []string
	buckets    []float64

	mu     sync.Mutex
	series map[string]*histSeries
}

type histSeries struct {
	labels []string
	counts []uint64 // per bucket, not cumulative; the last one is +Inf
	sum    float64
	count  uint64
}

func (h *HistogramVec) get(values []string) *histSeries {
	if len(values) != len(h.labels) {
		panic(fmt.Sprintf("metrics: %s takes %d label values, got %d", h.name, len(h.labels), len(values)))
	}
	k := key(values)
	s := h.series[k]
	if s == nil {
		s = &histSeries{labels: append([]string(nil), values...), counts: make([]uint64, len(h.buckets)+1)}
		h.series[k] = s
	}
	return s
}

// Observe records one observation.
func (h *HistogramVec) Observe(val float64, values ...string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.get(values)
	i, _ := slices.BinarySearch(h.buckets, val) // first bucket with bound >= val
	s.counts[i]++
	s.sum += val
	s.count++
}

// Touch creates the series with no observations, so that it is exported
// before the first one.
func (h *HistogramVec) Touch(values ...string) {
	h.mu.Lock()
	h.get(values)
	h.mu.Unlock()
}

// Count returns the number of observations of a series.
func (h *HistogramVec) Count(values ...string) uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	if s := h.series[key(values)]; s != nil {
		return s.count
	}
	return 0
}

// DeleteMatching removes every series whose value of label is value.
func (h *HistogramVec) DeleteMatching(label, value string) {
	i := slices.Index(h.labels, label)
	if i < 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for k, s := range h.series {
		if s.labels[i] == value {
			delete(h.series, k)
		}
	}
}

func (h *HistogramVec) write(w *bufio.Writer) {
	h.mu.Lock()
	list := make([]histSeries, 0, len(h.series))
	for _, s := range h.series {
		c := *s
		c.counts = append([]uint64(nil), s.counts...)
		list = append(list, c)
	}
	h.mu.Unlock()
	slices.SortFunc(list, func(a, b histSeries) int { return slices.Compare(a.labels, b.labels) })
	header(w, h.name, h.help, KindHistogram)
	for _, s := range list {
		var cum uint64
		for i, c := range s.counts {
			cum += c
			le := math.Inf(1)
			if i < len(h.buckets) {
				le = h.buckets[i]
			}
			line(w, h.name+"_bucket", h.labels, s.labels, "le", formatFloat(le), float64(cum))
		}
		line(w, h.name+"_sum", h.labels, s.labels, "", "", s.sum)
		line(w, h.name+"_count", h.labels, s.labels, "", "", float64(s.count))
	}
}

func header(w *bufio.Writer, name, help string, kind Kind) {
	fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", name, escapeHelp(help), name, kind)
}

// line writes one sample; extraName/extraValue is a label appended after
// the family's (le for histogram buckets).
func line(w *bufio.Writer, name string, labels, values []string, extraName, extraValue string, v float64) {
	w.WriteString(name)
	if len(labels) > 0 || extraName != "" {
		w.WriteByte('{')
		sep := ""
		for i, l := range labels {
			fmt.Fprintf(w, `%s%s="%s"`, sep, l, escapeLabel(values[i]))
			sep = ","
		}
		if extraName != "" {
			fmt.Fprintf(w, `%s%s="%s"`, sep, extraName, escapeLabel(extraValue))
		}
		w.WriteByte('}')
	}
	w.WriteByte(' ')
	w.WriteString(formatFloat(v))
	w.WriteByte('\n')
}

// formatFloat writes a value the way the text format spells it: Go float
// syntax, with +Inf, -Inf and NaN.
func formatFloat(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// The text format escapes backslash and newline in HELP, and also the
// double quote in label values.
var (
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
	labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
)

func escapeHelp(s string) string  { return helpEscaper.Replace(s) }
func escapeLabel(s string) string { return labelEscaper.Replace(s) }
