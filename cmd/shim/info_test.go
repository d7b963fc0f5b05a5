package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gogo/protobuf/proto"
	gogotypes "github.com/gogo/protobuf/types"

	"github.com/leanshim/leanshim/proto/events"
	"github.com/leanshim/leanshim/proto/eventsapi"
	"github.com/leanshim/leanshim/proto/introspection"
	"github.com/leanshim/leanshim/proto/runcopts"
	"github.com/leanshim/leanshim/reaper"
)

// TestInfoAction runs -info with this test binary as the OCI runtime
// (options binary_name): RuntimeInfo carries the shim's name and version,
// the options as given, and the runtime's features when it has them.
func TestInfoAction(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	opts := &gogotypes.Any{TypeUrl: "containerd.runc.v1.Options", Value: mustMarshal(t, &runcopts.Options{BinaryName: self})}
	tests := []struct {
		name         string
		fake         string
		stdin        []byte
		wantFeatures bool
	}{
		{"runtime with features", "features", mustMarshal(t, opts), true},
		{"runtime without features", "fail", mustMarshal(t, opts), false},
		{"no options: runc from PATH, not found", "", nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(fakeEnv, tc.fake)
			if tc.stdin == nil {
				t.Setenv("PATH", t.TempDir()) // no runc there
			}
			var out bytes.Buffer
			if err := infoAction(bytes.NewReader(tc.stdin), &out); err != nil {
				t.Fatal(err)
			}
			var info introspection.RuntimeInfo
			if err := proto.Unmarshal(out.Bytes(), &info); err != nil {
				t.Fatalf("stdout is not a RuntimeInfo: %v", err)
			}
			if info.Name != "io.containerd.lean.v2" || info.Version == nil || info.Version.Version != version {
				t.Errorf("name/version = %q/%v", info.Name, info.Version)
			}
			if tc.stdin != nil && !info.Options.Equal(opts) {
				t.Errorf("options = %v, want them echoed: %v", info.Options, opts)
			}
			if got := info.Features != nil; got != tc.wantFeatures {
				t.Fatalf("features = %v, want present: %v", info.Features, tc.wantFeatures)
			}
			if tc.wantFeatures {
				var f map[string]any
				if info.Features.TypeUrl != "types.containerd.io/opencontainers/runtime-spec/1/features/Features" ||
					json.Unmarshal(info.Features.Value, &f) != nil || f["ociVersionMin"] != "1.0.0" {
					t.Errorf("features = %s %s", info.Features.TypeUrl, info.Features.Value)
				}
			}
		})
	}
}

func TestInfoActionRejectsBadOptions(t *testing.T) {
	bad := mustMarshal(t, &gogotypes.Any{TypeUrl: "example.com/Nope", Value: []byte{1}})
	if err := infoAction(bytes.NewReader(bad), &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "unknown runtime options type") {
		t.Fatalf("err = %v", err)
	}
}

// TestBinarySender runs the v1 publish path with this test binary as
// containerd: argv and stdin are what containerd-shim sends (PROTOCOL.md
// §3.3), and the child is reaped by the reaper.
func TestBinarySender(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	rec := filepath.Join(t.TempDir(), "rec")
	ev := &events.TaskExit{ContainerId: "c1", Id: "c1", Pid: 42, ExitStatus: 137}
	evAny := &gogotypes.Any{TypeUrl: "containerd.events.TaskExit", Value: mustMarshal(t, ev)}
	env := &eventsapi.Envelope{Namespace: "ns1", Topic: "/tasks/exit", Event: evAny}

	err = withReaper(t.Context(), func(r *reaper.Reaper) error {
		s := binarySender{r: r, containerd: self, address: "/run/c.sock"}
		t.Setenv(fakeEnv, "record:"+rec)
		if err := s.Send(t.Context(), env); err != nil {
			return err
		}
		t.Setenv(fakeEnv, "fail")
		if err := s.Send(t.Context(), env); err == nil || !strings.Contains(err.Error(), "failing as asked") {
			t.Errorf("failing publish: err = %v, want the child's output in it", err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if _, _, err := r.RunCmd(ctx, osexec.Command(self), nil, true); err == nil {
			t.Errorf("RunCmd with a done ctx: want an error")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(rec)
	if err != nil {
		t.Fatal(err)
	}
	argv, stdin, _ := strings.Cut(string(b), "\n")
	if want := "--address /run/c.sock publish --topic /tasks/exit --namespace ns1"; argv != want {
		t.Errorf("argv %q, want %q", argv, want)
	}
	var got gogotypes.Any
	if err := proto.Unmarshal([]byte(stdin), &got); err != nil || !got.Equal(evAny) {
		t.Errorf("stdin: %v %v, want the event's Any %v", &got, err, evAny)
	}
}
