package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/gogo/protobuf/proto"
	gogotypes "github.com/gogo/protobuf/types"

	"github.com/leanshim/leanshim/proto/bootstrap"
	"github.com/leanshim/leanshim/proto/runcopts"
)

func mustMarshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestReadStartParams covers the three things containerd writes to start's
// stdin (PROTOCOL.md §1.5): 2.3+'s BootstrapParams, 1.6-2.2's bare options
// Any (which also decodes as BootstrapParams), and nothing.
func TestReadStartParams(t *testing.T) {
	cfg := config{id: "c1", namespace: "ns1"}
	opts := &gogotypes.Any{TypeUrl: "containerd.runc.v1.Options", Value: mustMarshal(t, &runcopts.Options{BinaryName: "crun"})}
	dir := "/run/x/s"
	tests := []struct {
		name          string
		stdin         []byte
		wantBootstrap bool
		wantOptions   *gogotypes.Any
		wantSocketDir string
		wantErr       string
	}{
		{name: "empty: containerd 1.6 without options", stdin: nil, wantSocketDir: defaultSocketDir},
		{name: "legacy options Any", stdin: mustMarshal(t, opts), wantOptions: opts, wantSocketDir: defaultSocketDir},
		{
			name:          "bootstrap params with options and socket dir",
			stdin:         mustMarshal(t, &bootstrap.BootstrapParams{InstanceId: "c1", Namespace: "ns1", Extensions: []*bootstrap.Extension{{Value: opts}}, OptionalSocketDir: &bootstrap.BootstrapParams_SocketDir{SocketDir: dir}}),
			wantBootstrap: true, wantOptions: opts, wantSocketDir: dir,
		},
		{
			name:          "bootstrap params without options or socket dir",
			stdin:         mustMarshal(t, &bootstrap.BootstrapParams{InstanceId: "c1", Namespace: "ns1", ContainerdVersion: "2.4.2"}),
			wantBootstrap: true, wantSocketDir: defaultSocketDir,
		},
		{
			name:        "bootstrap params for another task are an Any",
			stdin:       mustMarshal(t, &bootstrap.BootstrapParams{InstanceId: "other", Namespace: "ns1"}),
			wantOptions: &gogotypes.Any{TypeUrl: "other", Value: []byte("ns1")}, wantSocketDir: defaultSocketDir,
		},
		{name: "garbage", stdin: []byte{0xff, 0xff, 0xff}, wantErr: "neither bootstrap params nor an options Any"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := readStartParams(cfg, bytes.NewReader(tc.stdin))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.bootstrap != tc.wantBootstrap || p.socketDir != tc.wantSocketDir || !p.options.Equal(tc.wantOptions) {
				t.Fatalf("got bootstrap %v, socket dir %q, options %v; want %v, %q, %v",
					p.bootstrap, p.socketDir, p.options, tc.wantBootstrap, tc.wantSocketDir, tc.wantOptions)
			}
		})
	}
}

// TestPrintAddress checks both answers of start (PROTOCOL.md §1.6): the bare
// address for containerd ≤ 2.2, and for 2.3+ a protobuf BootstrapResult,
// which 2.4.2 tries to decode first, advertising task API version 3.
func TestPrintAddress(t *testing.T) {
	const addr = "unix:///run/containerd/s/3272bea47699920557fd8e0ecc9b0fbad8bbcd98de96f30b484690cc72ca67be"

	var legacy bytes.Buffer
	if err := printAddress(&legacy, startParams{}, addr); err != nil {
		t.Fatal(err)
	}
	if legacy.String() != addr {
		t.Fatalf("legacy: printed %q, want exactly the address", legacy.String())
	}
	// containerd 2.4.2 reads a legacy answer only if it fails to decode as
	// a BootstrapResult and as JSON.
	var r bootstrap.BootstrapResult
	if proto.Unmarshal(legacy.Bytes(), &r) == nil || json.Valid(legacy.Bytes()) {
		t.Fatalf("legacy answer %q would be taken for a BootstrapResult or JSON", legacy.String())
	}

	var boot bytes.Buffer
	if err := printAddress(&boot, startParams{bootstrap: true}, addr); err != nil {
		t.Fatal(err)
	}
	if err := proto.Unmarshal(boot.Bytes(), &r); err != nil {
		t.Fatalf("bootstrap answer is not a BootstrapResult: %v", err)
	}
	if r.Version != 3 || r.Address != addr || r.Protocol != "ttrpc" {
		t.Fatalf("BootstrapResult = %+v, want version 3, %s, ttrpc", &r, addr)
	}
	want := append([]byte{0x08, 0x03, 0x12, byte(len(addr))}, addr...)
	want = append(want, 0x1a, 0x05)
	want = append(want, "ttrpc"...)
	if !bytes.Equal(boot.Bytes(), want) {
		t.Fatalf("bootstrap answer % x, want % x", boot.Bytes(), want)
	}
}
