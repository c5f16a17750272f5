package client

import (
	"errors"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Only certificate failures are final; a handshake cut short is a node or
// network problem and is retried like any UNAVAILABLE.
func TestTLSFailureIsOnlyAboutCertificates(t *testing.T) {
	for msg, want := range map[string]bool{
		`connection error: desc = "error reading server preface: remote error: tls: certificate required"`:                                                        true,
		`connection error: desc = "transport: authentication handshake failed: tls: failed to verify certificate: x509: certificate signed by unknown authority"`: true,
		`connection error: desc = "transport: authentication handshake failed: EOF"`:                                                                              false,
		`connection error: desc = "transport: authentication handshake failed: read tcp 1.2.3.4:5->6.7.8.9:10: read: connection reset by peer"`:                   false,
		`connection error: desc = "transport: authentication handshake failed: context deadline exceeded"`:                                                        false,
		`unavailable: shard 2: no leader`: false,
	} {
		err := status.Error(codes.Unavailable, msg)
		if got := tlsFailure(err); got != want {
			t.Errorf("%q: tlsFailure %v, want %v", msg, got, want)
		}
		if code := attemptCode(err); (code == codes.Unauthenticated) != want {
			t.Errorf("%q: attempt code %v", msg, code)
		}
	}
	if tlsFailure(status.Error(codes.InvalidArgument, "tls: in a message")) || tlsFailure(errors.New("x509: plain")) {
		t.Error("only UNAVAILABLE statuses are handshake failures")
	}
}
