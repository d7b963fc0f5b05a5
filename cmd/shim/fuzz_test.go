package main

import (
	"bytes"
	"testing"

	"github.com/gogo/protobuf/proto"
	gogotypes "github.com/gogo/protobuf/types"

	"github.com/leanshim/leanshim/proto/bootstrap"
	"github.com/leanshim/leanshim/proto/runcopts"
)

// FuzzReadStartParams feeds arbitrary stdin to readStartParams with fixed
// -id and -namespace: it must never panic, and must take bootstrap mode
// (containerd ≥ 2.3) only when the bytes decode as BootstrapParams naming
// that very instance and namespace.
func FuzzReadStartParams(f *testing.F) {
	cfg := config{id: "c1", namespace: "ns1", address: "/run/containerd/containerd.sock"}
	runc, _ := proto.Marshal(&runcopts.Options{BinaryName: "crun"})
	opts := &gogotypes.Any{TypeUrl: "containerd.runc.v1.Options", Value: runc}
	seeds := []proto.Message{
		opts,
		&bootstrap.BootstrapParams{InstanceId: "c1", Namespace: "ns1", Extensions: []*bootstrap.Extension{{Value: opts}},
			OptionalSocketDir: &bootstrap.BootstrapParams_SocketDir{SocketDir: "/run/x/s"}},
		&bootstrap.BootstrapParams{InstanceId: "c1", Namespace: "ns1", ContainerdVersion: "2.4.2"},
		&bootstrap.BootstrapParams{InstanceId: "other", Namespace: "ns1"},
		&bootstrap.BootstrapParams{InstanceId: "c1", Namespace: "ns2"},
		&bootstrap.BootstrapParams{InstanceId: "c1", Namespace: "ns1", Extensions: []*bootstrap.Extension{{}}},
	}
	for _, m := range seeds {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(nil))
	f.Add([]byte{0x0a})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, stdin []byte) {
		p, err := readStartParams(cfg, bytes.NewReader(stdin))
		if err != nil {
			if p.bootstrap {
				t.Fatalf("bootstrap mode with error %v", err)
			}
			return
		}
		if p.socketDir == "" {
			t.Fatalf("no socket dir for %x", stdin)
		}
		if !p.bootstrap {
			if p.socketDir != defaultSocketDir {
				t.Fatalf("socket dir %q outside bootstrap mode", p.socketDir)
			}
			return
		}
		var bp bootstrap.BootstrapParams
		if err := proto.Unmarshal(stdin, &bp); err != nil {
			t.Fatalf("bootstrap mode for stdin that is not BootstrapParams (%v): %x", err, stdin)
		}
		if bp.InstanceId != cfg.id || bp.Namespace != cfg.namespace {
			t.Fatalf("bootstrap mode for instance %q namespace %q, want %q %q", bp.InstanceId, bp.Namespace, cfg.id, cfg.namespace)
		}
		if want := bp.GetSocketDir(); want != "" && p.socketDir != want {
			t.Fatalf("socket dir %q, want %q from the params", p.socketDir, want)
		}
	})
}
