// Return probes on a Go program (issue 12): depth recurses with a large frame, in a fresh
// goroutine each round (a goroutine starts on a small stack), so Go grows and moves the
// stack under the probed calls again and again.
//
//	gorec ROUNDS DEPTH          runs and prints "rounds R depth D calls C sum S"
//	gorec ROUNDS DEPTH wait     prints "waiting", reads a line from stdin first
//	gorec ROUNDS DEPTH touch F  creates file F first (to tell whether it ran at all)
package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
)

var calls int

// depth returns n after n nested calls of itself, each with a 512-byte frame.
//
//go:noinline
func depth(n int) int {
	calls++
	var pad [64]int
	for i := range pad {
		pad[i] = n + i
	}
	if n == 0 {
		return pad[0]
	}
	return depth(n-1) + 1 + pad[n%64] - n - n%64
}

func main() {
	rounds, _ := strconv.Atoi(os.Args[1])
	d, _ := strconv.Atoi(os.Args[2])
	if len(os.Args) > 3 && os.Args[3] == "touch" {
		os.WriteFile(os.Args[4], []byte("ran\n"), 0o644)
	}
	if len(os.Args) > 3 && os.Args[3] == "wait" {
		fmt.Println("waiting")
		bufio.NewReader(os.Stdin).ReadString('\n')
	}
	sum := 0
	for r := 0; r < rounds; r++ {
		done := make(chan int)
		go func() { done <- depth(d) }()
		sum += <-done
	}
	fmt.Printf("rounds %d depth %d calls %d sum %d\n", rounds, d, calls, sum)
}
