package main

import (
	"io"
	"math"
	"slices"
	"strings"
	"testing"
)

func TestPodsRowVerdict(t *testing.T) {
	nan := math.NaN()
	tests := []struct {
		name string
		r    podsRow
		want string
	}{
		{"met", podsRow{v: [3]float64{35, 90, 100}, maxRatio: 0.4}, "ok"},
		{"at the bound", podsRow{v: [3]float64{40, 90, 100}, maxRatio: 0.4}, "ok"},
		{"missed", podsRow{v: [3]float64{41, 90, 100}, maxRatio: 0.4}, "MISS"},
		{"no target", podsRow{v: [3]float64{41, 90, 100}}, ""},
		{"not measured", podsRow{v: [3]float64{nan, 90, 100}, maxRatio: 0.4}, ""},
		{"no reference", podsRow{v: [3]float64{1, 90, 0}, maxRatio: 0.4}, ""},
	}
	for _, tc := range tests {
		if got := tc.r.verdict(); got != tc.want {
			t.Errorf("%s: verdict %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestPodsMarkdown(t *testing.T) {
	res := newPodsResults(defaultPodsConfig(), [][2]string{{"kernel", "test"}})
	res.add("pod start", "ms", 0, [3]float64{60, 90, 100}, 0.7)
	res.note("a note")
	md := res.markdown()
	for _, want := range []string{
		"| pod start | ms | 60 | 90 | 100 | 0.60 | 0.90 | a ≤ 0.7× c | ok |",
		"- a note", "| kernel | test |", "`make bench-pods`", "host-network pods",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
}

func TestOverheadPids(t *testing.T) {
	// shim 10 -> holder 11, app 12 -> 13; shim 20 -> app 21; 30 unrelated.
	tree := procTree{children: map[int][]int{10: {11, 12}, 12: {13}, 20: {21}, 1: {10, 20, 30}}}
	got := overheadPids(tree, []int{10, 20}, map[int]bool{12: true, 21: true})
	slices.Sort(got)
	if want := []int{10, 11, 20}; !slices.Equal(got, want) {
		t.Errorf("overheadPids = %v, want %v", got, want)
	}
}

func TestKindOrder(t *testing.T) {
	first := map[int]int{}
	for i := range 3 {
		o := kindOrder(i)
		first[o[0]]++
		s := o[:]
		slices.Sort(s)
		if !slices.Equal(s, []int{0, 1, 2}) {
			t.Errorf("kindOrder(%d) = %v: not each kind once", i, kindOrder(i))
		}
	}
	if len(first) != 3 {
		t.Errorf("not every kind goes first once in 3 samples: %v", first)
	}
}

func TestParsePodsFlags(t *testing.T) {
	c, err := parsePodsFlags([]string{"-smoke", "-pods", "7"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !c.smoke || c.out != "" || c.samples != 5 || c.densePods != 7 {
		t.Errorf("smoke with -pods 7: %+v", c)
	}
	if _, err := parsePodsFlags([]string{"-samples", "0"}, io.Discard); err == nil {
		t.Error("-samples 0 accepted")
	}
	if c, _ := parsePodsFlags(nil, io.Discard); c.samples != 50 || c.densePods != 100 || c.out != "RESULTS-pods.md" {
		t.Errorf("defaults: %+v", c)
	}
}
