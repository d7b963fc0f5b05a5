package proto_test

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"slices"
	"testing"

	"github.com/gogo/protobuf/proto"
	gogotypes "github.com/gogo/protobuf/types"

	"github.com/leanshim/leanshim/proto/bootstrap"
	"github.com/leanshim/leanshim/proto/events"
	"github.com/leanshim/leanshim/proto/eventsapi"
	"github.com/leanshim/leanshim/proto/runcopts"
	"github.com/leanshim/leanshim/proto/taskapi"
	"github.com/leanshim/leanshim/proto/types"
)

// wire concatenates byte pieces: []byte, string (raw bytes) or int (one byte).
func wire(t *testing.T, pieces ...any) []byte {
	t.Helper()
	var b bytes.Buffer
	for _, p := range pieces {
		switch v := p.(type) {
		case []byte:
			b.Write(v)
		case string:
			b.WriteString(v)
		case int:
			b.WriteByte(byte(v))
		default:
			t.Fatalf("wire: unsupported piece %T", p)
		}
	}
	return b.Bytes()
}

func marshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatalf("marshal %T: %v", m, err)
	}
	return b
}

func assertBytes(t *testing.T, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Fatalf("bytes differ\n got: %s\nwant: %s", hex.EncodeToString(got), hex.EncodeToString(want))
	}
}

// TestForwardRequestTaskExitVector checks the PROTOCOL.md §3.1 vector: the
// ForwardRequest carrying TaskExit c1/c1 pid 42 status 137.
func TestForwardRequestTaskExitVector(t *testing.T) {
	want := wire(t,
		0x0a, 0x53, // ForwardRequest.envelope, 83 bytes
		0x0a, 0x06, 0x08, 0x81, 0xe2, 0xcf, 0xaa, 0x06, // Envelope.timestamp {seconds 1700000001}
		0x12, 0x07, "default", // Envelope.namespace
		0x1a, 0x0b, "/tasks/exit", // Envelope.topic
		0x22, 0x33, // Envelope.event, 51 bytes
		0x0a, 0x1a, "containerd.events.TaskExit", // Any.type_url
		0x12, 0x15, // Any.value, 21 bytes
		0x0a, 0x02, "c1", // TaskExit.container_id
		0x12, 0x02, "c1", // TaskExit.id
		0x18, 0x2a, // TaskExit.pid 42
		0x20, 0x89, 0x01, // TaskExit.exit_status 137
		0x2a, 0x06, 0x08, 0x80, 0xe2, 0xcf, 0xaa, 0x06, // TaskExit.exited_at {seconds 1700000000}
	)

	exit := &events.TaskExit{
		ContainerId: "c1",
		Id:          "c1",
		Pid:         42,
		ExitStatus:  137,
		ExitedAt:    &gogotypes.Timestamp{Seconds: 1700000000},
	}
	req := &eventsapi.ForwardRequest{Envelope: &eventsapi.Envelope{
		Timestamp: &gogotypes.Timestamp{Seconds: 1700000001},
		Namespace: "default",
		Topic:     "/tasks/exit",
		// Not types.MarshalAny: that prefixes "type.googleapis.com/", which
		// containerd 1.6 cannot resolve (PROTOCOL.md §2.6).
		Event: &gogotypes.Any{TypeUrl: "containerd.events.TaskExit", Value: marshal(t, exit)},
	}}
	assertBytes(t, marshal(t, req), want)

	var back eventsapi.ForwardRequest
	if err := proto.Unmarshal(want, &back); err != nil {
		t.Fatalf("unmarshal vector: %v", err)
	}
	if !proto.Equal(&back, req) {
		t.Fatalf("decoded vector = %v, want %v", &back, req)
	}
}

// TestBootstrapResultVector checks the PROTOCOL.md §1.6 vector (version 2).
// The address is the one of §1.7: sha256("/run/containerd/containerd.sock/default/mycontainer").
func TestBootstrapResultVector(t *testing.T) {
	const address = "unix:///run/containerd/s/3272bea47699920557fd8e0ecc9b0fbad8bbcd98de96f30b484690cc72ca67be"
	want := wire(t, 0x08, 0x02, 0x12, 0x59, address, 0x1a, 0x05, "ttrpc")

	res := &bootstrap.BootstrapResult{Version: 2, Address: address, Protocol: "ttrpc"}
	assertBytes(t, marshal(t, res), want)
}

func TestCreateTaskRequestRoundTrip(t *testing.T) {
	opts := &runcopts.Options{BinaryName: "crun", Root: "/run/containerd/runc", SystemdCgroup: true}
	in := &taskapi.CreateTaskRequest{
		Id:     "c1",
		Bundle: "/run/containerd/io.containerd.runtime.v2.task/default/c1",
		Rootfs: []*types.Mount{{
			Type:    "overlay",
			Source:  "overlay",
			Target:  "sub",
			Options: []string{"lowerdir=/a:/b", "upperdir=/u", "workdir=/w"},
		}},
		Terminal:         true,
		Stdin:            "/run/fifo/stdin",
		Stdout:           "/run/fifo/stdout",
		Stderr:           "binary:///bin/logger?k=v",
		Checkpoint:       "/var/checkpoint",
		ParentCheckpoint: "/var/parent",
		Options:          &gogotypes.Any{TypeUrl: "containerd.runc.v1.Options", Value: marshal(t, opts)},
	}
	b := marshal(t, in)

	var out taskapi.CreateTaskRequest
	if err := proto.Unmarshal(b, &out); err != nil {
		t.Fatalf("unmarshal: %v", err)
	}
	if !proto.Equal(&out, in) {
		t.Fatalf("round trip = %v, want %v", &out, in)
	}
	var gotOpts runcopts.Options
	if err := proto.Unmarshal(out.Options.Value, &gotOpts); err != nil {
		t.Fatalf("unmarshal options: %v", err)
	}
	if !proto.Equal(&gotOpts, opts) {
		t.Fatalf("options = %v, want %v", &gotOpts, opts)
	}
	// Every field is set, so every field number 1-10 appears once, in order.
	if got := fieldNumbers(t, b); !slices.Equal(got, []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}) {
		t.Fatalf("field numbers on the wire = %v", got)
	}
}

// TestLegacyAnyDecodesAsBootstrapParams pins the ambiguity of PROTOCOL.md
// §1.5: containerd 1.6-2.2 write a marshaled Any to start's stdin, and those
// bytes decode without error as BootstrapParams. Detection must therefore
// compare instance_id and namespace with the -id and -namespace flags.
func TestLegacyAnyDecodesAsBootstrapParams(t *testing.T) {
	const typeURL = "containerd.runc.v1.Options"
	value := marshal(t, &runcopts.Options{BinaryName: "runc"})
	legacy := marshal(t, &gogotypes.Any{TypeUrl: typeURL, Value: value})

	var p bootstrap.BootstrapParams
	if err := proto.Unmarshal(legacy, &p); err != nil {
		t.Fatalf("legacy Any does not decode as BootstrapParams (the trap is gone?): %v", err)
	}
	if p.InstanceId != typeURL {
		t.Errorf("instance_id = %q, want the Any's type_url %q", p.InstanceId, typeURL)
	}
	if p.Namespace != string(value) {
		t.Errorf("namespace = %q, want the Any's value %q", p.Namespace, value)
	}
}

// TestBootstrapParamsSocketDirPresence checks that socket_dir, declared as a
// one-field oneof, has the wire behaviour of containerd's proto3 "optional":
// absent when unset, present (even empty) when set.
func TestBootstrapParamsSocketDirPresence(t *testing.T) {
	unset := &bootstrap.BootstrapParams{InstanceId: "c1"}
	assertBytes(t, marshal(t, unset), wire(t, 0x0a, 0x02, "c1"))

	empty := &bootstrap.BootstrapParams{
		InstanceId:        "c1",
		OptionalSocketDir: &bootstrap.BootstrapParams_SocketDir{},
	}
	b := marshal(t, empty)
	assertBytes(t, b, wire(t, 0x0a, 0x02, "c1", 0x4a, 0x00))

	var back bootstrap.BootstrapParams
	if err := proto.Unmarshal(b, &back); err != nil {
		t.Fatalf("unmarshal: %v", err)
	}
	if _, ok := back.OptionalSocketDir.(*bootstrap.BootstrapParams_SocketDir); !ok {
		t.Fatalf("socket_dir presence lost: %v", &back)
	}

	set := &bootstrap.BootstrapParams{
		OptionalSocketDir: &bootstrap.BootstrapParams_SocketDir{SocketDir: "/run/s"},
		LogLevel:          bootstrap.LogLevel_LOG_LEVEL_DEBUG,
	}
	// log_level -4 is a 10-byte varint (negative int32 enums are sign-extended).
	want := wire(t, 0x18, 0xfc, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0x4a, 0x06, "/run/s")
	assertBytes(t, marshal(t, set), want)
	if got := set.GetSocketDir(); got != "/run/s" {
		t.Fatalf("GetSocketDir() = %q", got)
	}
}

// fieldNumbers returns the field numbers of the top-level fields in b, which
// may hold only varint and length-delimited fields.
func fieldNumbers(t *testing.T, b []byte) []int {
	t.Helper()
	var nums []int
	for len(b) > 0 {
		key, n := binary.Uvarint(b)
		if n <= 0 {
			t.Fatalf("bad key varint at %x", b)
		}
		b = b[n:]
		nums = append(nums, int(key>>3))
		switch key & 7 {
		case 0:
			_, n = binary.Uvarint(b)
		case 2:
			var l uint64
			l, n = binary.Uvarint(b)
			if n > 0 {
				n += int(l)
			}
		default:
			t.Fatalf("field %d: unexpected wire type %d", key>>3, key&7)
		}
		if n <= 0 || n > len(b) {
			t.Fatalf("field %d: truncated", key>>3)
		}
		b = b[n:]
	}
	return nums
}
