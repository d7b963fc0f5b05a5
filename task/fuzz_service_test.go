package task

import (
	"fmt"
	"strings"
	"testing"

	"github.com/gogo/protobuf/proto"
	gogotypes "github.com/gogo/protobuf/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/leanshim/leanshim/proto/taskapi"
)

// FuzzTaskService sends fuzzed requests to the task service's handlers
// through a real ttrpc server in the test process (fuzzHarness), with a fake
// runtime (testdata/fuzz-runtime/runc). An input is one call: a method
// (fuzzMethods, by index modulo their number; Shutdown would end the shim and
// is left out) and the raw bytes of its request. Before every input the
// Service holds the same containers (fuzzFixture), so a failure replays from
// its input alone. The target runs as root on the machine itself, so
// fuzzSandbox confines what a request may name (files, mounts, programs).
//
// Each call must return within fuzzCallTimeout; a panic in a handler ends
// the process; an error must be a status of a class containerd can act on
// (fuzzErrorOK); and afterwards the sentinel container, which no input may
// touch, must answer State as it was created.
func FuzzTaskService(f *testing.F) {
	h := newFuzzHarness(f)
	for _, s := range fuzzSeeds() {
		f.Add(s.method, s.req)
	}
	f.Fuzz(func(t *testing.T, method byte, req []byte) {
		h.start(t)
		m := fuzzMethods[int(method)%len(fuzzMethods)]
		callErr := h.call(m.name, req)
		if why := fuzzErrorOK(m, req, callErr); why != "" {
			t.Fatalf("%s %s: %s: %v", m.name, m.describe(req), why, callErr)
		}
		if err := h.checkSentinel(); err != nil {
			t.Fatalf("after %s %s (answer %v): %v", m.name, m.describe(req), callErr, err)
		}
		touched := ""
		if m.mutates && fuzzMayHaveActed(callErr) {
			touched = m.id(req)
		}
		if err := h.restore(touched); err != nil {
			t.Fatalf("after %s %s (answer %v): %v", m.name, m.describe(req), callErr, err)
		}
	})
}

// fuzzMethod is a task API method under fuzz: its name, a new request of its
// type, and whether a call can change a container.
type fuzzMethod struct {
	name    string
	req     func() proto.Message
	mutates bool
}

// fuzzMethods are the methods an input's first byte picks from. Update,
// CloseIO and ResizePty change nothing the fake runtime or the fixture keeps.
var fuzzMethods = []fuzzMethod{
	{"Create", func() proto.Message { return &taskapi.CreateTaskRequest{} }, true},
	{"Start", func() proto.Message { return &taskapi.StartRequest{} }, true},
	{"State", func() proto.Message { return &taskapi.StateRequest{} }, false},
	{"Kill", func() proto.Message { return &taskapi.KillRequest{} }, true},
	{"Exec", func() proto.Message { return &taskapi.ExecProcessRequest{} }, true},
	{"Delete", func() proto.Message { return &taskapi.DeleteRequest{} }, true},
	{"Pids", func() proto.Message { return &taskapi.PidsRequest{} }, false},
	{"Pause", func() proto.Message { return &taskapi.PauseRequest{} }, true},
	{"Resume", func() proto.Message { return &taskapi.ResumeRequest{} }, true},
	{"CloseIO", func() proto.Message { return &taskapi.CloseIORequest{} }, false},
	{"ResizePty", func() proto.Message { return &taskapi.ResizePtyRequest{} }, false},
	{"Update", func() proto.Message { return &taskapi.UpdateTaskRequest{} }, false},
	{"Wait", func() proto.Message { return &taskapi.WaitRequest{} }, false},
	{"Stats", func() proto.Message { return &taskapi.StatsRequest{} }, false},
	{"Connect", func() proto.Message { return &taskapi.ConnectRequest{} }, false},
	{"Checkpoint", func() proto.Message { return &taskapi.CheckpointTaskRequest{} }, true},
}

// decode returns req as m's request message, or nil if it is not one.
func (m fuzzMethod) decode(req []byte) proto.Message {
	v := m.req()
	if proto.Unmarshal(req, v) != nil {
		return nil
	}
	return v
}

// id is the container id req names, or "".
func (m fuzzMethod) id(req []byte) string {
	if v, ok := m.decode(req).(interface{ GetId() string }); ok {
		return v.GetId()
	}
	return ""
}

// describe renders req for a failure message.
func (m fuzzMethod) describe(req []byte) string {
	if v := m.decode(req); v != nil {
		return fmt.Sprintf("{%s}", proto.CompactTextString(v))
	}
	return fmt.Sprintf("%x (undecodable)", req)
}

// fuzzErrorOK returns why err is not an acceptable answer to a call of m
// with req, or "" if it is. toStatus's classes NotFound, AlreadyExists,
// FailedPrecondition, InvalidArgument and Unimplemented always are; Canceled
// never is (nothing cancels). Beyond those:
//   - DeadlineExceeded only from Wait, which the sandbox gives a short deadline;
//   - PermissionDenied only from the sandbox;
//   - Internal only from ttrpc itself, for a payload that is not the method's
//     request message (containerd never sends one);
//   - Unknown only with the runtime's own message: a runtime failure has no
//     class, in containerd's runc shim as here (toStatus's default).
//
// Unknown from anywhere else is an error that escaped classification;
// anything but a status means the call hung or the server is gone.
func fuzzErrorOK(m fuzzMethod, req []byte, err error) string {
	if err == nil {
		return ""
	}
	st, ok := status.FromError(err)
	if !ok {
		return "not a ttrpc status: the call hung or the server is gone"
	}
	msg := st.Message()
	switch st.Code() {
	case codes.NotFound, codes.AlreadyExists, codes.FailedPrecondition, codes.InvalidArgument, codes.Unimplemented:
		return ""
	case codes.DeadlineExceeded:
		if m.name == "Wait" {
			return ""
		}
	case codes.PermissionDenied:
		if strings.HasPrefix(msg, sandboxRefusal) {
			return ""
		}
	case codes.Internal:
		if m.decode(req) == nil && strings.HasPrefix(msg, "ttrpc: error unmarshalling payload") {
			return ""
		}
	case codes.Unknown:
		if strings.Contains(msg, "fakeruntime: ") {
			return ""
		}
	}
	return fmt.Sprintf("error class %s is not one the shim should answer with", st.Code())
}

// fuzzMayHaveActed reports whether a call that returned err may have
// changed its container: it succeeded, or the runtime failed or time ran
// out part way. The other classes are refusals before anything ran.
func fuzzMayHaveActed(err error) bool {
	switch status.Code(err) {
	case codes.OK, codes.Unknown, codes.DeadlineExceeded:
		return true
	}
	return false
}

// fuzzRaw is a protobuf message that is its own encoding: ttrpc's codec
// (gogo proto.Marshal) sends it as it is, and keeps a response unparsed.
type fuzzRaw []byte

func (r *fuzzRaw) Marshal() ([]byte, error) { return *r, nil }
func (r *fuzzRaw) Unmarshal(b []byte) error { *r = append((*r)[:0], b...); return nil }
func (r *fuzzRaw) Reset()                   { *r = nil }
func (r *fuzzRaw) String() string           { return fmt.Sprintf("%x", []byte(*r)) }
func (*fuzzRaw) ProtoMessage()              {}

func fuzzAny(url, value string) *gogotypes.Any {
	return &gogotypes.Any{TypeUrl: url, Value: []byte(value)}
}
