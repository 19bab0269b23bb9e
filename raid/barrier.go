//go:build !nobarrier

package raid

// barriers says whether a commit orders its data, metadata and superblocks
// with flushes (Volume.Barrier). The nobarrier build tag turns them off so
// that the power-cut harness can prove it notices: make powercut
// GOFLAGS=-tags=nobarrier must fail.
const barriers = true
