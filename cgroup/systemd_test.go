package cgroup

import "testing"

func TestExpandSlice(t *testing.T) {
	tests := []struct {
		in, want string
		wantErr  bool
	}{
		{"system.slice", "/system.slice", false},
		{"kubepods-besteffort-pod1.slice", "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice", false},
		{"-", "/", false},
		{"-.slice", "/", false},
		{"bad-.slice", "", true},
		{"a--b.slice", "", true},
		{"a/b.slice", "", true},
		{"noslice", "", true},
		{".slice", "", true},
	}
	for _, tc := range tests {
		got, err := expandSlice(tc.in)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("expandSlice(%q) = %q, %v; want %q, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}
