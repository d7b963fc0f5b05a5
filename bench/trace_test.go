package main

import (
	"slices"
	"testing"
)

func TestParseTrace(t *testing.T) {
	log := `time=x level=INFO msg=trace on=true
time=x level=INFO msg="trace exec start request" exec=a ns=1000000
time=x level=INFO msg="trace forked" pid=5 ns=1500000 exec_ns=9
time=x level=INFO msg="trace forked" pid=6 ns=9000000 exec_ns=9
time=x level=INFO msg="trace exit send" exec=a reaped_to_send_ns=250000
time=x level=INFO msg="trace exec start request" exec=b ns=20000000
some other line
time=x level=INFO msg="trace forked" pid=7 ns=22000000 exec_ns=9
`
	toFork, toSend := parseTrace(log)
	if want := []float64{0.5, 2}; !slices.Equal(toFork, want) {
		t.Errorf("request→fork %v, want %v (a fork with no request before it is not paired)", toFork, want)
	}
	if want := []float64{0.25}; !slices.Equal(toSend, want) {
		t.Errorf("reap→send %v, want %v", toSend, want)
	}
}
