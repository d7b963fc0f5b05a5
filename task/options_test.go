package task

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/gogo/protobuf/proto"
	gogotypes "github.com/gogo/protobuf/types"

	"github.com/leanshim/leanshim/proto/runcopts"
	"github.com/leanshim/leanshim/proto/runctypes"
	"github.com/leanshim/leanshim/proto/runtimeoptions"
)

func anyOf(t *testing.T, m proto.Message) *gogotypes.Any {
	t.Helper()
	a, err := marshalAny(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestDecodeOptions(t *testing.T) {
	file := filepath.Join(t.TempDir(), "runc.toml")
	if err := os.WriteFile(file, []byte("BinaryName = \"crun\"\nRoot = \"/r\"\nSystemdCgroup = true\nIoUid = 7\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(t.TempDir(), "bad.toml")
	if err := os.WriteFile(bad, []byte("BinaryName = "), 0o600); err != nil {
		t.Fatal(err)
	}
	runc := anyOf(t, &runcopts.Options{BinaryName: "runc", NoPivotRoot: true})
	prefixed := &gogotypes.Any{TypeUrl: "type.googleapis.com/" + runc.TypeUrl, Value: runc.Value}
	tests := []struct {
		name    string
		in      *gogotypes.Any
		want    *runcopts.Options
		wantErr error
	}{
		{"none", nil, &runcopts.Options{}, nil},
		{"runc options", runc, &runcopts.Options{BinaryName: "runc", NoPivotRoot: true}, nil},
		{"type.googleapis.com prefix", prefixed, &runcopts.Options{BinaryName: "runc", NoPivotRoot: true}, nil},
		{"config_path (containerd 1.6 CRI, ctr --runtime-config-path)",
			anyOf(t, &runtimeoptions.Options{ConfigPath: file}),
			&runcopts.Options{BinaryName: "crun", Root: "/r", SystemdCgroup: true, IoUid: 7}, nil},
		{"config_body (containerd 2.x CRI) wins over the file",
			anyOf(t, &runtimeoptions.Options{ConfigPath: file, ConfigBody: []byte("BinaryName = \"runc\"\nTypeUrl = \"x\"\nNoNewKeyring = true\n")}),
			&runcopts.Options{BinaryName: "runc", Root: "/r", SystemdCgroup: true, IoUid: 7, NoNewKeyring: true}, nil},
		{"empty runtimeoptions", anyOf(t, &runtimeoptions.Options{}), &runcopts.Options{}, nil},
		{"missing config file", anyOf(t, &runtimeoptions.Options{ConfigPath: "/nonexistent.toml"}), nil, errInvalid},
		{"invalid toml", anyOf(t, &runtimeoptions.Options{ConfigPath: bad}), nil, errInvalid},
		{"config_path is a device", anyOf(t, &runtimeoptions.Options{ConfigPath: "/dev/zero"}), nil, errInvalid},
		{"config_path is a directory", anyOf(t, &runtimeoptions.Options{ConfigPath: t.TempDir()}), nil, errInvalid},
		{"containerd 1.6 CreateOptions (ctr run --no-pivot, WithShimCgroup, WithUIDOwner)",
			anyOf(t, &runctypes.CreateOptions{NoPivotRoot: true, NoNewKeyring: true, ShimCgroup: "/shim", IoUid: 1000, IoGid: 1001,
				CriuWorkPath: "/w", CriuImagePath: "/i", OpenTcp: true, Terminal: true}),
			&runcopts.Options{NoPivotRoot: true, NoNewKeyring: true, ShimCgroup: "/shim", IoUid: 1000, IoGid: 1001,
				CriuWorkPath: "/w", CriuImagePath: "/i"}, nil},
		{"containerd 1.6 RuncOptions", anyOf(t, &runctypes.RuncOptions{Runtime: "crun", RuntimeRoot: "/rr", CriuPath: "/c", SystemdCgroup: true}),
			&runcopts.Options{BinaryName: "crun", Root: "/rr", CriuPath: "/c", SystemdCgroup: true}, nil},
		{"garbage CreateOptions", &gogotypes.Any{TypeUrl: "containerd.linux.runc.CreateOptions", Value: []byte{0xff, 0xff}}, nil, errInvalid},
		{"unknown type", &gogotypes.Any{TypeUrl: "example.com/X", Value: []byte{1}}, nil, errInvalid},
		{"garbage runc options", &gogotypes.Any{TypeUrl: runc.TypeUrl, Value: []byte{0xff, 0xff}}, nil, errInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeOptions(tc.in)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("got %v, want %v", err, tc.wantErr)
				}
				if code(err).String() != "InvalidArgument" {
					t.Fatalf("code %s", code(err))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got, tc.want) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}
