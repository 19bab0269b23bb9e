//go:build nobarrier

package powercut

// nobarrierBuild: this test binary has the commit's barriers dropped.
const nobarrierBuild = true
