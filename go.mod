module github.com/leanshim/leanshim

go 1.26.0

require (
	github.com/containerd/ttrpc v1.1.2
	github.com/gogo/protobuf v1.3.2
	github.com/pelletier/go-toml/v2 v2.4.3
	golang.org/x/sys v0.50.0
	google.golang.org/grpc v1.27.1
)

require (
	github.com/golang/protobuf v1.5.3 // indirect
	github.com/sirupsen/logrus v1.8.1 // indirect
	github.com/stretchr/testify v1.8.1 // indirect
	google.golang.org/genproto v0.0.0-20200224152610-e50cd9704f63 // indirect
)

// github.com/golang/protobuf is here only through google.golang.org/grpc/status
// and genproto's google.rpc.Status, which ttrpc v1.1 uses for error replies.
// From v1.4 on, it builds protobuf-go descriptors of every registered file at
// start-up (descriptorpb, google/rpc/status.proto, gunzipped), which left every
// shim about 130 KiB of heap it never needs and added 2.5 MB to the binary
// (issue 16). v1.3.5 keeps the registered descriptors as bytes, and is what
// grpc v1.27 and this genproto were built with. A newer genproto, whose types
// are protobuf-go's only, is no way out: gogo's unmarshaller, which ttrpc v1.1
// uses, panics on them (containerd/ttrpc#62).
replace github.com/golang/protobuf => github.com/golang/protobuf v1.3.5
