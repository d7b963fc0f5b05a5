package main

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestMedianPercentile(t *testing.T) {
	tests := []struct {
		name        string
		xs          []float64
		median, p99 float64
	}{
		{"empty", nil, math.NaN(), math.NaN()},
		{"one", []float64{7}, 7, 7},
		{"odd", []float64{3, 1, 2}, 2, 3},
		{"even", []float64{4, 1, 3, 2}, 2.5, 4},
		{"hundred", seq(100), 50.5, 99},
		{"two hundred", seq(200), 100.5, 198},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := median(tc.xs); !same(got, tc.median) {
				t.Errorf("median = %v, want %v", got, tc.median)
			}
			if got := percentile(tc.xs, 99); !same(got, tc.p99) {
				t.Errorf("p99 = %v, want %v", got, tc.p99)
			}
		})
	}
}

func TestGoals(t *testing.T) {
	tests := []struct {
		name      string
		r         row
		g         goal
		ok, known bool
		text      string
	}{
		{"ratio met", row{lean: 1, runc: 2, unit: "ms"}, maxRatio(0.9), true, true, "≤ 0.9×"},
		{"ratio missed", row{lean: 2, runc: 2, unit: "ms"}, maxRatio(0.9), false, true, "≤ 0.9×"},
		{"min ratio", row{lean: 3, runc: 2, unit: "MiB/s"}, minRatio(1.5), true, true, "≥ 1.5×"},
		{"value", row{lean: 1.3, runc: 2, unit: "MiB"}, maxValue(1.2), false, true, "≤ 1.2 MiB"},
		{"zero runc", row{lean: 1, runc: 0, unit: "/min"}, maxRatio(1), false, false, "≤ 1×"},
		{"not measured", row{lean: math.NaN(), runc: 1, unit: "ms"}, maxValue(1), false, false, "≤ 1 ms"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ok, known := tc.g.met(tc.r)
			if ok != tc.ok || known != tc.known {
				t.Errorf("met = %v, %v; want %v, %v", ok, known, tc.ok, tc.known)
			}
			if got := tc.g.String(tc.r.unit); got != tc.text {
				t.Errorf("String = %q, want %q", got, tc.text)
			}
		})
	}
}

func TestMarkdown(t *testing.T) {
	res := newResults(smokeConfig(defaultConfig()), [][2]string{{"kernel", "6.18"}})
	res.add("idle USS", "MiB", 2, 1.0, 2.5, maxValue(1.2), maxRatio(0.5))
	res.add("drift", "KiB", 0, 100, 0, maxValue(64))
	res.add("not measured", "ms", 1, math.NaN(), 3)
	res.fail("phase x: boom")
	out := res.markdown()
	for _, want := range []string{
		"| idle USS | MiB | 1.00 | 2.50 | 0.40 | ≤ 1.2 MiB, ≤ 0.5× | ok |",
		"| drift | KiB | 100 | 0 | — | ≤ 64 KiB | MISS |",
		"| not measured | ms | — | 3.0 | — |  |  |",
		"- FAILED: phase x: boom",
		"| kernel | 6.18 |",
		"`make bench-smoke`",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("markdown lacks %q:\n%s", want, out)
		}
	}
	if !res.failed() {
		t.Error("failed() = false after fail")
	}
}

func TestFlags(t *testing.T) {
	c, err := parseFlags([]string{"-smoke", "-idle", "5s"}, &strings.Builder{})
	if err != nil {
		t.Fatal(err)
	}
	if !c.smoke || c.idleN != 3 || c.idle != 5*time.Second || c.out != "" || c.streamBytes != 100<<20 {
		t.Errorf("smoke config = %+v", c)
	}
	c, err = parseFlags(nil, &strings.Builder{})
	if err != nil {
		t.Fatal(err)
	}
	if c.idleN != 20 || c.driftExecs != 10000 || c.out != "RESULTS.md" {
		t.Errorf("default config = %+v", c)
	}
	c, err = parseFlags([]string{"-only", "idle"}, &strings.Builder{})
	if err != nil || c.out != "" {
		t.Errorf("-only idle: out = %q, %v; want no results file", c.out, err)
	}
	if _, err := parseFlags([]string{"-only", "nope"}, &strings.Builder{}); err == nil {
		t.Error("-only nope: no error")
	}
}

func seq(n int) []float64 {
	xs := make([]float64, n)
	for i := range xs {
		xs[i] = float64(i + 1)
	}
	return xs
}

func same(a, b float64) bool { return a == b || math.IsNaN(a) && math.IsNaN(b) }
