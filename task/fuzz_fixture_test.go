package task

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/gogo/protobuf/proto"

	"github.com/leanshim/leanshim/proto/events"
	"github.com/leanshim/leanshim/proto/taskapi"
)

// fuzzFixture is what the Service holds, besides the sentinel, before every
// input, by container id: the state of the init, then of each exec. c1 is
// created; c2 runs, with exec x1 added, exec x2 running, and exec xt added
// with a terminal (which the fake runtime refuses at Start).
var fuzzFixture = map[string]string{
	"c1": "created",
	"c2": "running x1=created x2=running xt=created",
}

// restore brings the Service back to the fixture: it tears down every
// container that is not part of it, or not as it should be, or named by
// touched (an input acted on it), and rebuilds what is missing.
func (h *fuzzHarness) restore(touched string) error {
	for _, id := range h.ids() {
		want, ok := fuzzFixture[id]
		if id == fuzzSentinel || ok && id != touched && h.shape(id) == want {
			continue
		}
		if err := h.teardown(id); err != nil {
			return err
		}
	}
	for _, id := range []string{"c1", "c2"} {
		if _, err := h.svc.get(id); err == nil {
			continue
		}
		if err := h.build(id); err != nil {
			return fmt.Errorf("fixture %s: %w", id, err)
		}
		if got := h.shape(id); got != fuzzFixture[id] {
			return fmt.Errorf("fixture %s is %q, want %q", id, got, fuzzFixture[id])
		}
	}
	return nil
}

// ids lists the Service's containers, Creates in progress left out.
func (h *fuzzHarness) ids() []string {
	h.svc.mu.Lock()
	defer h.svc.mu.Unlock()
	var ids []string
	for id, c := range h.svc.containers {
		if c != nil {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// shape is a container as fuzzFixture spells it.
func (h *fuzzHarness) shape(id string) string {
	c, err := h.svc.get(id)
	if err != nil {
		return "missing"
	}
	st, _, _ := c.init.Status()
	s := st.String()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, x := range slices.Sorted(maps.Keys(c.execs)) {
		xs, _, _ := c.execs[x].p.Status()
		s += " " + x + "=" + xs.String()
	}
	return s
}

// fuzzExecSpec is a JSON OCI process, as containerd sends it.
const fuzzExecSpec = `{"args":["sh"],"cwd":"/"}`

func (h *fuzzHarness) build(id string) error {
	ctx, cancel := context.WithTimeout(context.Background(), fuzzCallTimeout)
	defer cancel()
	if _, err := h.svc.Create(ctx, &taskapi.CreateTaskRequest{Id: id, Bundle: h.sandbox.dir + "/fixture/" + id}); err != nil {
		return err
	}
	if id != "c2" {
		return nil
	}
	if _, err := h.svc.Start(ctx, &taskapi.StartRequest{Id: id}); err != nil {
		return err
	}
	for _, x := range []string{"x1", "x2", "xt"} {
		r := &taskapi.ExecProcessRequest{Id: id, ExecId: x, Terminal: x == "xt", Spec: fuzzAny(fuzzSpecURL, fuzzExecSpec)}
		if _, err := h.svc.Exec(ctx, r); err != nil {
			return err
		}
	}
	_, err := h.svc.Start(ctx, &taskapi.StartRequest{Id: id, ExecId: "x2"})
	return err
}

// teardown kills every process of a container, waits for their exits and
// deletes the execs and the container.
func (h *fuzzHarness) teardown(id string) error {
	c, err := h.svc.get(id)
	if err != nil {
		return nil // gone already
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*fuzzCallTimeout)
	defer cancel()
	// Best effort: the init may have stopped already, or never have run.
	_, _ = h.svc.Kill(ctx, &taskapi.KillRequest{Id: id, Signal: 9, All: true})
	if _, pid, _ := c.init.Status(); pid > 0 {
		// Not the init's Done: the exits of the execs, which Delete waits
		// for, are accounted after their own Done, and before the init's
		// TaskExit is published.
		if err := fuzzAwait(ctx, h.events.initExit(id)); err != nil {
			return fmt.Errorf("teardown %s: init: %w", id, err)
		}
	}
	c.mu.Lock()
	execs := make(map[string]*execEntry, len(c.execs))
	maps.Copy(execs, c.execs)
	c.mu.Unlock()
	for x, e := range execs {
		if _, pid, _ := e.p.Status(); pid > 0 {
			_ = e.p.Kill(9) // --all above has killed it already, unless it was not recorded
			if err := fuzzAwait(ctx, e.p.Done()); err != nil {
				return fmt.Errorf("teardown %s: exec %s: %w", id, x, err)
			}
		}
		if _, err := h.svc.Delete(ctx, &taskapi.DeleteRequest{Id: id, ExecId: x}); err != nil {
			return fmt.Errorf("teardown %s: delete exec %s: %w", id, x, err)
		}
	}
	if _, err := h.svc.Delete(ctx, &taskapi.DeleteRequest{Id: id}); err != nil {
		return fmt.Errorf("teardown %s: delete: %w", id, err)
	}
	return nil
}

func fuzzAwait(ctx context.Context, done <-chan struct{}) error {
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return errors.New("no exit after SIGKILL")
	}
}

// fuzzEvents is the Service's Events: it queues on the Publisher, and tells
// the harness when a container's init TaskExit is out, which the Service
// publishes only once every exec's exit is accounted for.
type fuzzEvents struct {
	pub *Publisher

	mu    sync.Mutex               // guards exits
	exits map[string]chan struct{} // by container id: closed when its init's TaskExit is published
}

// Publish never blocks (the Service holds a container's lock).
func (e *fuzzEvents) Publish(topic string, ev proto.Message) {
	e.pub.Publish(topic, ev)
	e.mu.Lock()
	defer e.mu.Unlock()
	switch ev := ev.(type) {
	case *events.TaskCreate:
		e.exits[ev.ContainerId] = make(chan struct{})
	case *events.TaskExit:
		if ch := e.exits[ev.ContainerId]; ch != nil && ev.Id == ev.ContainerId {
			close(ch)
			e.exits[ev.ContainerId] = nil // published at most once per container
		}
	case *events.TaskDelete:
		delete(e.exits, ev.ContainerId)
	}
}

// initExit is closed once the init TaskExit of the container id is out.
func (e *fuzzEvents) initExit(id string) <-chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	if ch := e.exits[id]; ch != nil {
		return ch
	}
	done := make(chan struct{})
	close(done)
	return done
}
