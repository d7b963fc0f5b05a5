package task

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gogo/protobuf/proto"

	"github.com/leanshim/leanshim/process"
	"github.com/leanshim/leanshim/proto/events"
	"github.com/leanshim/leanshim/proto/taskapi"
)

// newTestContainer returns a container whose events land in a Publisher
// that is never run, so the test reads its queue.
// Background work (onDone) is kept in the container's testBg until the
// test runs it with runBg; killing the container's processes is recorded
// there as "killAll".
func newTestContainer(shared bool) (*container, *Publisher, *testBg) {
	pub := NewPublisher(TTRPCSender("/nonexistent"), "ns", slog.New(slog.NewTextHandler(io.Discard, nil)))
	bg := &testBg{}
	c := &container{
		id: "c1", pub: pub, sharedPid: shared, execs: make(map[string]*execEntry), initDone: make(chan struct{}),
		onDone:   func(fn func()) { bg.fns = append(bg.fns, fn) },
		killRest: func() { bg.names = append(bg.names, "killAll") },
	}
	return c, pub, bg
}

type testBg struct {
	fns   []func()
	names []string
}

// run runs the background work queued so far, outside the container's lock
// as the Service does.
func (b *testBg) run() {
	fns := b.fns
	b.fns = nil
	for _, fn := range fns {
		fn()
	}
}

// published renders the queued events as "topic id", e.g. "/tasks/exit e1".
func published(t *testing.T, pub *Publisher) []string {
	t.Helper()
	pub.mu.Lock()
	defer pub.mu.Unlock()
	var out []string
	for _, env := range pub.queue {
		var s string
		switch env.Event.TypeUrl {
		case "containerd.events.TaskExit":
			var e events.TaskExit
			mustUnmarshal(t, env.Event.Value, &e)
			s = fmt.Sprintf("exit %s %d", e.Id, e.ExitStatus)
		case "containerd.events.TaskStart":
			s = "start"
		case "containerd.events.TaskExecStarted":
			var e events.TaskExecStarted
			mustUnmarshal(t, env.Event.Value, &e)
			s = "exec-started " + e.ExecId
		default:
			s = env.Topic
		}
		if env.Namespace != "ns" || env.Timestamp == nil || !strings.HasPrefix(env.Topic, "/tasks/") {
			t.Fatalf("bad envelope %+v", env)
		}
		out = append(out, s)
	}
	return out
}

func mustUnmarshal(t *testing.T, b []byte, m proto.Message) {
	t.Helper()
	if err := proto.Unmarshal(b, m); err != nil {
		t.Fatal(err)
	}
}

func exitOf(status int) process.Exit { return process.Exit{Pid: 42, Status: status, At: time.Now()} }

// startInit runs the real startInit with a fake runtime call; exitDuring is
// delivered while that call runs.
func startInit(c *container, exitDuring *process.Exit, ok bool) {
	_, _ = c.startInit(func() (int, error) {
		if exitDuring != nil {
			c.onInitExit(*exitDuring)
		}
		if !ok {
			return 0, errors.New("runtime start failed")
		}
		return 42, nil
	})
}

func addExec(c *container, id string) *execEntry {
	x := &execEntry{req: &taskapi.ExecProcessRequest{ExecId: id}}
	c.execs[id] = x
	return x
}

// startExecWith runs the real runExecStart with a fake runtime call.
func startExecWith(c *container, x *execEntry, exitDuring *process.Exit, ok bool) {
	c.mu.Lock()
	c.liveExecs++
	c.mu.Unlock()
	_, _ = c.runExecStart(x, func() (int, error) {
		if exitDuring != nil {
			c.onExecExit(x, *exitDuring)
		}
		if !ok {
			return 0, errors.New("runtime exec failed")
		}
		return 43, nil
	})
}

func TestEventOrdering(t *testing.T) {
	e0, e7 := exitOf(0), exitOf(7)
	tests := []struct {
		name   string
		shared bool
		run    func(c *container)
		want   []string
		wantBg []string
	}{
		{"start then exit", false, func(c *container) {
			startInit(c, nil, true)
			c.onInitExit(e7)
		}, []string{"start", "exit c1 7"}, nil},
		{"exit during start is held until TaskStart", false, func(c *container) {
			startInit(c, &e7, true)
		}, []string{"start", "exit c1 7"}, nil},
		{"exit of a failed start is still reported", false, func(c *container) {
			startInit(c, &e7, false)
		}, []string{"exit c1 7"}, nil},
		{"exit before any start (killed while created)", false, func(c *container) {
			c.onInitExit(e0)
		}, []string{"exit c1 0"}, nil},
		{"exec exit during exec start", false, func(c *container) {
			startInit(c, nil, true)
			x := addExec(c, "e1")
			startExecWith(c, x, &e0, true)
			c.onInitExit(e7)
		}, []string{"start", "exec-started e1", "exit e1 0", "exit c1 7"}, nil},
		{"init exit waits for the exec's", false, func(c *container) {
			startInit(c, nil, true)
			x := addExec(c, "e1")
			startExecWith(c, x, nil, true)
			c.onInitExit(e7)
			c.onExecExit(x, e0)
		}, []string{"start", "exec-started e1", "exit e1 0", "exit c1 7"}, nil},
		{"shared pid namespace: execs killed on init exit", true, func(c *container) {
			startInit(c, nil, true)
			x1, x2 := addExec(c, "e1"), addExec(c, "e2")
			startExecWith(c, x1, nil, true)
			startExecWith(c, x2, nil, true)
			c.onInitExit(e7)
			c.onExecExit(x2, exitOf(137))
			c.onExecExit(x1, exitOf(137))
		}, []string{"start", "exec-started e1", "exec-started e2", "exit e2 137", "exit e1 137", "exit c1 7"}, []string{"killAll"}},
		{"shared pid namespace, no execs: leftovers killed before the exit", true, func(c *container) {
			startInit(c, nil, true)
			c.onInitExit(e7)
		}, []string{"start", "exit c1 7"}, []string{"killAll"}},
		{"exit during create is held until TaskCreate", false, func(c *container) {
			_, _ = c.createInit(func() (*process.Init, error) {
				c.onInitExit(e7) // killed before Create returned
				return nil, nil
			}, func(*process.Init) { c.pub.Publish("/tasks/create", &events.TaskCreate{ContainerId: c.id}) })
		}, []string{"/tasks/create", "exit c1 7"}, nil},
		{"delete before the exit hook: TaskExit first, once", false, func(c *container) {
			startInit(c, nil, true)
			c.mu.Lock()
			c.deletedLocked(e7) // the watcher has recorded the exit; its hook has not run yet
			c.mu.Unlock()
			c.onInitExit(e7)
		}, []string{"start", "exit c1 7", "/tasks/delete"}, nil},
		{"failed exec start releases the init exit", false, func(c *container) {
			startInit(c, nil, true)
			x := addExec(c, "e1")
			c.mu.Lock()
			c.liveExecs++
			c.mu.Unlock()
			_, _ = c.runExecStart(x, func() (int, error) {
				c.onInitExit(e7) // the init dies while runc exec runs
				return 0, errors.New("container not running")
			})
		}, []string{"start", "exit c1 7"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, pub, bg := newTestContainer(tc.shared)
			tc.run(c)
			bg.run()
			if got := published(t, pub); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("events %q, want %q", got, tc.want)
			}
			if !reflect.DeepEqual(bg.names, tc.wantBg) {
				t.Fatalf("background %q, want %q", bg.names, tc.wantBg)
			}
		})
	}
}

// TestInitDoneWaitsForExecs: Wait and State see the init exited only once
// its TaskExit is queued, after the execs' exits.
func TestInitDoneWaitsForExecs(t *testing.T) {
	c, _, _ := newTestContainer(false)
	startInit(c, nil, true)
	x := addExec(c, "e1")
	startExecWith(c, x, nil, true)
	c.onInitExit(exitOf(7))
	select {
	case <-c.initDone:
		t.Fatal("init reported exited while an exec runs")
	default:
	}
	c.onExecExit(x, exitOf(0))
	select {
	case <-c.initDone:
	default:
		t.Fatal("init not reported exited after the last exec's exit")
	}
}

func TestValidID(t *testing.T) {
	for _, ok := range []string{"a", "c1", "my-container_1.2", strings.Repeat("x", 76)} {
		if err := validID("id", ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "../x", "a/b", "..", ".a", "a.", "a..b", "a b", strings.Repeat("x", 77), "a\x00"} {
		if err := validID("id", bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
