package main

// promcheck watch: a small Prometheus for the tests. It scrapes the targets' /metrics, keeps the samples
// in Prometheus' own TSDB, and evaluates the alerting rules of the chart with Prometheus' own PromQL
// engine, printing each evaluation's pending and firing alerts as a JSON line on stdout.
//
//	promcheck watch --rules groups.json --target URL [--target URL] [--label k=v] [--interval 1s] [--speed 60]
//
// --label adds a label to every scraped series, as a scrape config or a ServiceMonitor does (the
// chart's rules select namespace="<release namespace>").
//
// --speed N stamps the samples on a clock that runs N times faster than the wall clock, so that the
// rules' 15-minute windows and `for` durations pass in seconds; the counters and gauges are the
// targets' real ones, only their timestamps are spread out. A scrape that fails is skipped (its series
// go stale as in Prometheus); an alert is pending while its expression returns the series, and firing
// once it has for `for` (Prometheus' rule semantics, without notifications).

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
)

type targets []string

func (t *targets) String() string     { return strings.Join(*t, ",") }
func (t *targets) Set(v string) error { *t = append(*t, v); return nil }

type alertState struct {
	Alert  string            `json:"alert"`
	Labels map[string]string `json:"labels"`
	State  string            `json:"state"`
	Value  float64           `json:"value"`
}

type evaluation struct {
	At     string       `json:"at"`
	Alerts []alertState `json:"alerts"`
}

// The samples of one exposition, as Prometheus would append them (histograms and summaries as their series).
func samples(families map[string]*dto.MetricFamily, instance string, added map[string]string) []struct {
	ls labels.Labels
	v  float64
} {
	var out []struct {
		ls labels.Labels
		v  float64
	}
	add := func(name string, m *dto.Metric, extra map[string]string, v float64) {
		b := labels.NewScratchBuilder(len(m.GetLabel()) + 3)
		b.Add(labels.MetricName, name)
		b.Add("instance", instance)
		for k, val := range added {
			b.Add(k, val)
		}
		for _, l := range m.GetLabel() {
			b.Add(l.GetName(), l.GetValue())
		}
		for k, val := range extra {
			b.Add(k, val)
		}
		b.Sort()
		out = append(out, struct {
			ls labels.Labels
			v  float64
		}{b.Labels(), v})
	}
	for name, f := range families {
		for _, m := range f.GetMetric() {
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				add(name, m, nil, m.GetCounter().GetValue())
			case dto.MetricType_GAUGE:
				add(name, m, nil, m.GetGauge().GetValue())
			case dto.MetricType_UNTYPED:
				add(name, m, nil, m.GetUntyped().GetValue())
			case dto.MetricType_HISTOGRAM:
				h := m.GetHistogram()
				for _, b := range h.GetBucket() {
					add(name+"_bucket", m, map[string]string{"le": fmt.Sprint(b.GetUpperBound())}, float64(b.GetCumulativeCount()))
				}
				add(name+"_bucket", m, map[string]string{"le": "+Inf"}, float64(h.GetSampleCount()))
				add(name+"_sum", m, nil, h.GetSampleSum())
				add(name+"_count", m, nil, float64(h.GetSampleCount()))
			case dto.MetricType_SUMMARY:
				s := m.GetSummary()
				for _, q := range s.GetQuantile() {
					add(name, m, map[string]string{"quantile": fmt.Sprint(q.GetQuantile())}, q.GetValue())
				}
				add(name+"_sum", m, nil, s.GetSampleSum())
				add(name+"_count", m, nil, float64(s.GetSampleCount()))
			}
		}
	}
	return out
}

func scrape(client *http.Client, url string) (map[string]*dto.MetricFamily, error) {
	res, err := client.Get(url)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP %d", res.StatusCode)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	return parser.TextToMetricFamilies(res.Body)
}

func watch(args []string) error {
	fs := flag.NewFlagSet("watch", flag.ContinueOnError)
	rulesFile := fs.String("rules", "", "rule groups, JSON")
	var urls, added targets
	fs.Var(&urls, "target", "a /metrics URL (repeatable)")
	fs.Var(&added, "label", "k=v added to every scraped series (repeatable)")
	interval := fs.Duration("interval", time.Second, "between two scrapes and evaluations (wall clock)")
	speed := fs.Float64("speed", 1, "how much faster than the wall clock the samples' clock runs")
	if err := fs.Parse(args); err != nil {
		return err
	}
	extra := map[string]string{}
	for _, kv := range added {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return fmt.Errorf("--label %q: want k=v", kv)
		}
		extra[k] = v
	}
	raw, err := os.ReadFile(*rulesFile)
	if err != nil {
		return err
	}
	var g groups
	if err := json.Unmarshal(raw, &g); err != nil {
		return fmt.Errorf("%s: %w", *rulesFile, err)
	}
	dir, err := os.MkdirTemp("", "promcheck-watch-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	opts := tsdb.DefaultOptions()
	opts.OutOfOrderTimeWindow = 0
	db, err := tsdb.Open(dir, nil, nil, opts, nil)
	if err != nil {
		return err
	}
	defer db.Close()
	engine := promql.NewEngine(promql.EngineOpts{MaxSamples: 50_000_000, Timeout: time.Minute, LookbackDelta: 5 * time.Minute})
	type active struct {
		since time.Time
		state alertState
	}
	pending := map[string]*active{}
	client := &http.Client{Timeout: 5 * time.Second}
	start := time.Now()
	clock := func() time.Time { return start.Add(time.Duration(float64(time.Since(start)) * *speed)) }
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	out := json.NewEncoder(os.Stdout)
	for ctx.Err() == nil {
		now := clock()
		app := db.Appender(ctx)
		for _, url := range urls {
			families, err := scrape(client, url)
			if err != nil {
				fmt.Fprintf(os.Stderr, "scrape %s: %v\n", url, err)
				continue
			}
			for _, s := range samples(families, url, extra) {
				if _, err := app.Append(0, s.ls, now.UnixMilli(), s.v); err != nil {
					return err
				}
			}
		}
		if err := app.Commit(); err != nil {
			return err
		}
		seen := map[string]bool{}
		eval := evaluation{At: now.UTC().Format(time.RFC3339), Alerts: []alertState{}}
		for _, group := range g.Groups {
			for _, r := range group.Rules {
				if r.Alert == "" {
					continue
				}
				var hold time.Duration
				if r.For != "" {
					d, err := model.ParseDuration(r.For)
					if err != nil {
						return fmt.Errorf("%s: for: %w", r.Alert, err)
					}
					hold = time.Duration(d)
				}
				q, err := engine.NewInstantQuery(ctx, storage.Queryable(db), nil, r.Expr, now)
				if err != nil {
					return fmt.Errorf("%s: %w", r.Alert, err)
				}
				res := q.Exec(ctx)
				if res.Err != nil {
					q.Close()
					return fmt.Errorf("%s: %w", r.Alert, res.Err)
				}
				vector, _ := res.Vector()
				for _, s := range vector {
					ls := s.Metric.Map()
					delete(ls, labels.MetricName)
					for k, v := range r.Labels {
						ls[k] = v
					}
					keys := make([]string, 0, len(ls))
					for k, v := range ls {
						keys = append(keys, k+"="+v)
					}
					sort.Strings(keys)
					key := r.Alert + "{" + strings.Join(keys, ",") + "}"
					seen[key] = true
					a := pending[key]
					if a == nil {
						a = &active{since: now}
						pending[key] = a
					}
					state := "pending"
					if now.Sub(a.since) >= hold {
						state = "firing"
					}
					value := s.F
					if math.IsNaN(value) || math.IsInf(value, 0) {
						value = 0
					}
					a.state = alertState{Alert: r.Alert, Labels: ls, State: state, Value: value}
					eval.Alerts = append(eval.Alerts, a.state)
				}
				q.Close()
			}
		}
		for key := range pending {
			if !seen[key] {
				delete(pending, key)
			}
		}
		if err := out.Encode(eval); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
		case <-time.After(*interval):
		}
	}
	return nil
}
