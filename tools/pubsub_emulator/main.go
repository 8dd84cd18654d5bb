// Command pubsub-emulator serves an in-memory Cloud Pub/Sub (the Go client's pstest fake) on
// 127.0.0.1 for tests: topics, subscriptions, pull and streaming pull, ack deadlines,
// redelivery and dead-letter policies. Nothing is persisted.
//
// Clients find it through PUBSUB_EMULATOR_HOST=127.0.0.1:PORT. Once it accepts connections it
// prints one line, "listening 127.0.0.1:PORT", on stdout; it stops on SIGTERM or SIGINT.
//
//	pubsub-emulator -port 0
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"cloud.google.com/go/pubsub/v2/pstest"
)

func main() {
	port := flag.Int("port", 0, "TCP port on 127.0.0.1 (0: any free port)")
	flag.Parse()

	// Registered before the server starts, so that a signal sent right after the ready line
	// stops it cleanly instead of killing it.
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)

	defer func() {
		// pstest panics when it cannot listen (e.g. the port is taken): one line, exit 1.
		if err := recover(); err != nil {
			fmt.Fprintln(os.Stderr, "pubsub-emulator:", err)
			os.Exit(1)
		}
	}()
	srv := pstest.NewServerWithAddress(fmt.Sprintf("127.0.0.1:%d", *port))
	// The listener is bound before NewServerWithAddress returns, so the port is ready now.
	// Stdout is unbuffered in Go: the line reaches a pipe at once.
	fmt.Printf("listening %s\n", srv.Addr)

	<-stop
	srv.Close()
}
