//go:build nobarrier

package raid

// barriers is off: this build drops a commit's ordering flushes, to prove
// the power-cut harness notices (see barrier.go). Never ship it.
const barriers = false
