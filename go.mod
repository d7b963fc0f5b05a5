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
	google.golang.org/protobuf v1.30.0 // indirect
)
