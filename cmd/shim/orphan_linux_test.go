package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/leanshim/leanshim/proto/taskapi"
)

type guardTest struct {
	g     *orphanGuard
	core  *fakeCore
	clock *fakeClock
	log   *bytes.Buffer
}

func newGuardTest(grace time.Duration) guardTest {
	core, clock, buf := newFakeCore(), &fakeClock{}, &bytes.Buffer{}
	g := newOrphanGuard(core, orphanConfig{
		Grace: grace, Count: core.Count, AfterFunc: clock.AfterFunc,
		Log: slog.New(slog.NewTextHandler(buf, nil)),
	})
	return guardTest{g: g, core: core, clock: clock, log: buf}
}

func (gt guardTest) create(t *testing.T, id string) error {
	t.Helper()
	_, err := gt.g.Create(context.Background(), &taskapi.CreateTaskRequest{Id: id})
	return err
}

func (gt guardTest) delete(t *testing.T, id string) {
	t.Helper()
	if _, err := gt.g.Delete(context.Background(), &taskapi.DeleteRequest{Id: id}); err != nil {
		t.Fatalf("delete %s: %v", id, err)
	}
}

func wantRefused(t *testing.T, err error) {
	t.Helper()
	if st, _ := status.FromError(err); err == nil || st.Code() != codes.FailedPrecondition || !strings.Contains(st.Message(), "shim is exiting") {
		t.Fatalf("create after exit: got %v, want FailedPrecondition \"shim is exiting\"", err)
	}
}

func TestOrphanGuardFiresWhenEmpty(t *testing.T) {
	gt := newGuardTest(60 * time.Second)
	gt.g.arm()
	gt.g.arm() // idempotent: still one timer
	tm := gt.clock.only(t)
	if tm.d != 60*time.Second {
		t.Fatalf("timer of %v, want the grace 60s", tm.d)
	}
	tm.fire()
	if n := gt.core.shutDown(); n != 1 {
		t.Fatalf("core shut down %d times, want 1", n)
	}
	if !strings.Contains(gt.log.String(), "no task for 60s and no shutdown from containerd: exiting") {
		t.Fatalf("log does not say why the shim exits:\n%s", gt.log.String())
	}
	wantRefused(t, gt.create(t, "late"))
	if gt.core.Count() != 0 || len(gt.core.lateCalls) != 0 {
		t.Fatalf("a refused Create reached the core")
	}
	gt.g.arm()
	gt.clock.none(t, "arm after exit")
}

func TestOrphanGuardCreateCancels(t *testing.T) {
	gt := newGuardTest(time.Minute)
	gt.g.arm()
	stale := gt.clock.only(t)
	if err := gt.create(t, "a"); err != nil {
		t.Fatal(err)
	}
	gt.clock.none(t, "with a container")
	// The timer had fired just as Create stopped it: its callback runs late.
	stale.fire()
	if gt.core.shutDown() != 0 {
		t.Fatal("a stale timer shut the shim down with a container in it")
	}
	if err := gt.create(t, "b"); err != nil {
		t.Fatalf("create after a stale timer: %v", err)
	}
}

func TestOrphanGuardRearmsAfterLastDelete(t *testing.T) {
	gt := newGuardTest(time.Minute)
	gt.g.arm()
	for _, id := range []string{"a", "b"} { // a group: two containers, one shim
		if err := gt.create(t, id); err != nil {
			t.Fatal(err)
		}
	}
	gt.delete(t, "a")
	gt.clock.none(t, "one container of the group left")
	gt.delete(t, "b")
	tm := gt.clock.only(t)
	if err := gt.create(t, "c"); err != nil { // a Create before it fires
		t.Fatal(err)
	}
	gt.clock.none(t, "re-created")
	tm.fire()
	gt.delete(t, "c")
	gt.clock.only(t).fire()
	if gt.core.shutDown() != 1 {
		t.Fatal("no shutdown after the grace that followed the last Delete")
	}
}

func TestOrphanGuardFailedCreateRearms(t *testing.T) {
	gt := newGuardTest(time.Minute)
	gt.core.createErr = errors.New("runc create failed")
	gt.g.arm()
	if err := gt.create(t, "a"); err == nil {
		t.Fatal("create succeeded")
	}
	gt.clock.only(t).fire()
	if gt.core.shutDown() != 1 {
		t.Fatal("no shutdown after a failed Create left the shim empty")
	}
}

// TestOrphanGuardCreateInFlight: a Create that got past the guard keeps the
// shim, against the timer and against the Shutdown rpc; once it has failed,
// the shim is empty again and exits.
func TestOrphanGuardCreateInFlight(t *testing.T) {
	gt := newGuardTest(time.Minute)
	gt.core.createErr = errors.New("runc create failed")
	gt.core.entered, gt.core.release = make(chan int), make(chan struct{})
	gt.g.arm()
	stale := gt.clock.only(t)
	done := make(chan error)
	go func() { done <- gt.create(t, "slow") }() // joined below
	<-gt.core.entered
	stale.fire()
	if _, err := gt.g.Shutdown(context.Background(), &taskapi.ShutdownRequest{}); err != nil {
		t.Fatal(err)
	}
	if gt.core.shutDown() != 0 {
		t.Fatal("shim shut down while a Create was in flight")
	}
	gt.clock.none(t, "Create in flight")
	close(gt.core.release)
	if err := <-done; err == nil {
		t.Fatal("create succeeded")
	}
	gt.clock.only(t).fire()
	if gt.core.shutDown() != 1 {
		t.Fatal("no shutdown once the failed Create left the shim empty")
	}
}

func TestOrphanGuardShutdownRPC(t *testing.T) {
	gt := newGuardTest(time.Minute)
	gt.g.arm()
	if err := gt.create(t, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := gt.g.Shutdown(context.Background(), &taskapi.ShutdownRequest{}); err != nil || gt.core.shutDown() != 0 {
		t.Fatalf("Shutdown with a container: %v, %d shutdowns", err, gt.core.shutDown())
	}
	gt.delete(t, "a")
	gt.clock.only(t)
	if _, err := gt.g.Shutdown(context.Background(), &taskapi.ShutdownRequest{}); err != nil || gt.core.shutDown() != 1 {
		t.Fatalf("Shutdown of an empty shim: %v, %d shutdowns", err, gt.core.shutDown())
	}
	gt.clock.none(t, "after Shutdown")
	wantRefused(t, gt.create(t, "b"))
}

func TestOrphanGuardClose(t *testing.T) {
	gt := newGuardTest(time.Minute)
	gt.g.arm()
	stale := gt.clock.only(t)
	gt.g.close()
	gt.clock.none(t, "after close")
	stale.fire()
	if gt.core.shutDown() != 0 {
		t.Fatal("a timer stopped by close shut the core down")
	}
	wantRefused(t, gt.create(t, "a"))
}

// TestOrphanGuardRace runs Creates and Deletes from several goroutines
// against real timers with a 1 ms grace, in many rounds, so that the timer
// expires among them (run it with -race). In each round no Create may reach
// the core once it has shut down, every Create must succeed or be refused
// cleanly, and the shim, left empty, must exit exactly once.
func TestOrphanGuardRace(t *testing.T) {
	racedRounds := 0
	for round := range 100 {
		core := newFakeCore()
		g := newOrphanGuard(core, orphanConfig{Grace: time.Millisecond, Count: core.Count, Log: slog.New(slog.DiscardHandler)})
		g.arm()
		var wg sync.WaitGroup
		var mu sync.Mutex // guards refused
		refused := 0
		for w := range 4 {
			wg.Go(func() {
				for i := range 50 {
					id := fmt.Sprintf("w%d-%d", w, i)
					if _, err := g.Create(context.Background(), &taskapi.CreateTaskRequest{Id: id}); err != nil {
						if st, _ := status.FromError(err); st.Code() != codes.FailedPrecondition {
							t.Errorf("round %d: create %s: %v", round, id, err)
						}
						mu.Lock()
						refused++
						mu.Unlock()
						return
					}
					if _, err := g.Delete(context.Background(), &taskapi.DeleteRequest{Id: id}); err != nil {
						t.Errorf("round %d: delete %s: %v", round, id, err)
					}
					time.Sleep(time.Duration(i%3) * 500 * time.Microsecond) // empty now and then, for about the grace
				}
			})
		}
		wg.Wait()
		if refused > 0 {
			racedRounds++
		}
		deadline := time.Now().Add(5 * time.Second)
		for core.shutDown() == 0 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond) // the last timer is real: wait for it
		}
		if n := core.shutDown(); n != 1 {
			t.Fatalf("round %d: core shut down %d times once empty, want 1", round, n)
		}
		if len(core.lateCalls) > 0 {
			t.Fatalf("round %d: creates reached the core after it shut down: %v", round, core.lateCalls)
		}
	}
	if racedRounds == 0 {
		t.Fatal("the timer never expired while Creates were running: the test tests nothing")
	}
	t.Logf("%d of 100 rounds ended with the timer expiring among Creates", racedRounds)
}

func TestParseOrphanGrace(t *testing.T) {
	cases := []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{"", defaultOrphanGrace, false},
		{"2s", 2 * time.Second, false},
		{"150ms", 150 * time.Millisecond, false},
		{"0", defaultOrphanGrace, true},
		{"-1s", defaultOrphanGrace, true},
		{"soon", defaultOrphanGrace, true},
		{"60", defaultOrphanGrace, true}, // a duration needs its unit
	}
	for _, tc := range cases {
		got, err := parseOrphanGrace(tc.in)
		if got != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("parseOrphanGrace(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
	if defaultOrphanGrace != 60*time.Second {
		t.Errorf("default grace %v, documented as 60s", defaultOrphanGrace)
	}
}
