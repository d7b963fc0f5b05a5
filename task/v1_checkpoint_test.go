package task

import (
	"errors"
	"testing"

	"github.com/gogo/protobuf/proto"
	gogotypes "github.com/gogo/protobuf/types"

	"github.com/leanshim/leanshim/proto/runcopts"
	"github.com/leanshim/leanshim/proto/runctypes"
)

func TestV1CheckpointOptions(t *testing.T) {
	anyOf := func(m proto.Message) *gogotypes.Any { a, _ := marshalAny(m); return a }
	tests := []struct {
		name    string
		in      *gogotypes.Any
		want    runcopts.CheckpointOptions
		wantErr bool
	}{
		{"none: the work dir", nil, runcopts.CheckpointOptions{WorkPath: "/w"}, false},
		{"ctr 1.6 (linux.runc)", anyOf(&runctypes.CheckpointOptions{Exit: true, OpenTcp: true, ExternalUnixSockets: true,
			Terminal: true, FileLocks: true, EmptyNamespaces: []string{"network"}, CgroupsMode: "soft", ImagePath: "/img"}),
			runcopts.CheckpointOptions{Exit: true, OpenTcp: true, ExternalUnixSockets: true, Terminal: true, FileLocks: true,
				EmptyNamespaces: []string{"network"}, CgroupsMode: "soft", ImagePath: "/img", WorkPath: "/w"}, false},
		{"work path given", anyOf(&runctypes.CheckpointOptions{WorkPath: "/mine"}), runcopts.CheckpointOptions{WorkPath: "/mine"}, false},
		{"runc.v1 options", anyOf(&runcopts.CheckpointOptions{Exit: true}), runcopts.CheckpointOptions{Exit: true, WorkPath: "/w"}, false},
		{"garbage", &gogotypes.Any{TypeUrl: "containerd.linux.runc.CheckpointOptions", Value: []byte{0xff}}, runcopts.CheckpointOptions{}, true},
		{"foreign", &gogotypes.Any{TypeUrl: "example.com/X", Value: []byte{1}}, runcopts.CheckpointOptions{}, true},
	}
	v := NewV1(&fakeCore{}, V1Config{Workdir: "/w"})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, err := v.checkpointOptions(tc.in)
			if tc.wantErr {
				if !errors.Is(err, errInvalid) {
					t.Fatalf("err = %v, want errInvalid", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got runcopts.CheckpointOptions
			if err := proto.Unmarshal(a.Value, &got); err != nil {
				t.Fatal(err)
			}
			if a.TypeUrl != "containerd.runc.v1.CheckpointOptions" || got.String() != tc.want.String() {
				t.Fatalf("got %s %s\nwant %s", a.TypeUrl, got.String(), tc.want.String())
			}
		})
	}
}
