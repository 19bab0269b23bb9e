package tgt

import (
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	good := map[string]int64{
		"4096": 4096, "512k": 512 << 10, "512K": 512 << 10, "512KB": 512 << 10, "256M": 256 << 20,
		"1G": 1 << 30, "1GiB": 1 << 30, "1gib": 1 << 30, "1.5G": 3 << 29, "0.5k": 512, "2T": 2 << 40,
		"100B": 100, "3E": 3 << 60, "4611686018427387903": 1<<62 - 1,
	}
	for in, want := range good {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	bad := map[string]string{
		"": "bad size", "G": "bad size", "abc": "bad size", "1.2.3G": "bad size", "-1G": "bad size",
		"1e3": "bad size", "1/2G": "bad size", "1iB": "bad size", ".5G": "bad size", "0": "must be positive",
		"0.1k": "not a whole number of bytes", "4E": "too large", "99999999999T": "too large",
		"18446744073709551617": "too large", "1Q": "bad size",
	}
	for in, want := range bad {
		_, err := ParseSize(in)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), `"`+in+`"`) {
			t.Errorf("ParseSize(%q) = %v; want an error naming %q that says %q", in, err, in, want)
		}
	}
}
