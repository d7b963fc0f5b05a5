package main

import (
	"slices"
	"testing"
)

func TestParseTrace(t *testing.T) {
	log := `time=x level=INFO msg=trace on=true
time=x level=INFO msg="trace exec start request" exec=a ns=1000000 wait_ns=100
time=x level=INFO msg="trace forked" pid=5 ns=1500000 wait_ns=200100 exec_ns=9
time=x level=INFO msg="trace forked" pid=6 ns=9000000 wait_ns=300000 exec_ns=9
time=x level=INFO msg="trace reaped" pid=5 ns=1800000 wait_ns=300000
time=x level=INFO msg="trace reaped" pid=50 ns=1750000 wait_ns=300000
time=x level=INFO msg="trace exit send" exec=a pid=50 ns=2000000 wait_ns=400000 reaped_to_send_ns=250000
time=x level=INFO msg="trace exec start request" exec=b ns=20000000 wait_ns=900000
some other line
time=x level=INFO msg="trace forked" pid=7 ns=22000000 wait_ns=500000 exec_ns=9
time=x level=INFO msg="trace reaped" pid=7 ns=23000000 wait_ns=500000
time=x level=INFO msg="trace sent" topic=/tasks/exec-started ns=23700000 wait_ns=500000
time=x level=INFO msg="trace exit send" exec=b pid=70 ns=24000000 wait_ns=9000000 reaped_to_send_ns=500000
time=x level=INFO msg="trace exit send" exec=z ns=25000000 reaped_to_send_ns=100000
`
	tr := parseTrace(log)
	if want := []float64{0.5, 2}; !slices.Equal(tr.toFork, want) {
		t.Errorf("request→fork %v, want %v (a fork with no request before it is not paired)", tr.toFork, want)
	}
	// a waited 0.2 ms for a CPU; b's sum fell (a thread ended): kept whole.
	if want := []float64{0.3, 2}; !slices.Equal(tr.toForkCPU, want) {
		t.Errorf("request→fork less waits %v, want %v", tr.toForkCPU, want)
	}
	if want := []float64{0.25, 0.5, 0.1}; !slices.Equal(tr.toSend, want) {
		t.Errorf("reap→send %v, want %v", tr.toSend, want)
	}
	// a: reaped at 1.75 ms, its runc (pid 5) at 1.8: 0.2 ms from the
	// later. b: reaped at 23.5 ms, after its runc (23), and the event
	// before it answered at 23.7: 0.3. z: no request, no runtime: not
	// counted.
	if want := []float64{0.2, 0.3}; !slices.Equal(tr.own, want) {
		t.Errorf("shim's share %v, want %v", tr.own, want)
	}
	// a waited 0.1 ms of its 0.2 after its runc's reap; b waited more than
	// its whole span: nothing of it is the shim's.
	if want := []float64{0.1, 0}; !slices.Equal(tr.ownCPU, want) {
		t.Errorf("shim's share less waits %v, want %v", tr.ownCPU, want)
	}
}
