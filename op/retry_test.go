package op

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestJudge(t *testing.T) {
	cases := []struct {
		resp *Response
		err  error
		want Verdict
	}{
		{&Response{}, nil, Done},
		{&Response{Code: CodeUnknownOp}, nil, Done},
		{&Response{Code: CodeWrongOwner}, nil, Retry},
		{&Response{Code: CodeStaleTable}, nil, Retry},
		{&Response{Code: CodeMigrating}, nil, Retry},
		{&Response{Code: CodeBackupTimeout}, nil, Retry},
		{&Response{Code: CodeClosed}, nil, Retry},
		{nil, ErrClosed, Fail},
		{nil, fmt.Errorf("dial: %w", ErrUnavailable), Retry},
		{nil, Error(CodeTooLarge, "big"), Fail},
		{nil, errors.Join(ErrTimeout, context.DeadlineExceeded), Fail},
	}
	for i, c := range cases {
		if got := Judge(c.resp, c.err); got != c.want {
			t.Errorf("case %d: Judge = %v, want %v", i, got, c.want)
		}
	}
}

func TestBackoffWaitEndsWithContextOrWake(t *testing.T) {
	var b Backoff
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := b.Wait(ctx, nil); !errors.Is(err, ErrCanceled) {
		t.Fatalf("canceled ctx: %v", err)
	}
	wake := make(chan struct{})
	close(wake)
	b = Backoff{Max: time.Hour}
	for range 30 { // the delay grows far past any test deadline: wake must cut it
		if err := b.Wait(context.Background(), wake); err != nil {
			t.Fatal(err)
		}
	}
}

func TestErrorCodesRoundTrip(t *testing.T) {
	for c := Code(1); c < codeEnd; c++ {
		err := Error(c, "detail")
		if !errors.Is(err, c.Sentinel()) || CodeOf(err) != c {
			t.Errorf("code %d: %v does not round-trip", c, err)
		}
		if Message(err) != "detail" {
			t.Errorf("code %d: message %q", c, Message(err))
		}
	}
	if CodeOf(nil) != OK || Error(OK, "x") != nil {
		t.Error("OK is not nil")
	}
	if CodeOf(errors.New("other")) != CodeInternal {
		t.Error("unknown errors must map to CodeInternal")
	}
	if CodeOf(FromContext(expired())) != CodeTimeout {
		t.Error("deadline must map to CodeTimeout")
	}
}

func expired() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), -time.Second)
	cancel()
	return ctx
}
