package wire_test

import (
	"bytes"
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/shoalgrid/shoal/op"
	"github.com/shoalgrid/shoal/wire"
)

// benchRequest is a typical map Put: a 16-byte key and a 100-byte value.
func benchRequest() *op.Request {
	return &op.Request{
		Service: "map", Name: "sessions", Op: 2, Partition: 113,
		Key: "session:12345678", Value: bytes.Repeat([]byte{'v'}, 100),
		Num: 60000, TableVersion: 42, Timeout: 2 * time.Second,
	}
}

func benchResponse() *op.Response {
	return &op.Response{Found: true, Value: bytes.Repeat([]byte{'v'}, 100), Num: 1, TableVersion: 42}
}

func BenchmarkEncodeRequest(b *testing.B) {
	req := benchRequest()
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	b.SetBytes(int64(len(requestBody(b, req))))
	b.ReportAllocs()
	for b.Loop() {
		buf.Reset()
		if err := wire.EncodeRequest(enc, req); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeRequest(b *testing.B) {
	data := requestBody(b, benchRequest())
	rd := bytes.NewReader(nil)
	dec := msgpack.NewDecoder(rd)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		rd.Reset(data)
		dec.Reset(rd)
		var r op.Request
		if err := wire.DecodeRequest(dec, &r); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeRequestBytes is the checked path a Conn takes for every
// frame (checkBody, then DecodeRequest), plus a new decoder.
func BenchmarkDecodeRequestBytes(b *testing.B) {
	data := requestBody(b, benchRequest())
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := wire.DecodeRequestBytes(data); err != nil {
			b.Fatal(err)
		}
	}
}

// reflectRequest has op.Request's fields, in wire order: msgpack's
// reflection decodes an array into a struct's fields by position.
type reflectRequest op.Request

// BenchmarkDecodeRequestReflect decodes the same bytes with msgpack.Unmarshal,
// for comparison with the hand-written decoder.
func BenchmarkDecodeRequestReflect(b *testing.B) {
	data := requestBody(b, benchRequest())
	want, err := wire.DecodeRequestBytes(data)
	if err != nil {
		b.Fatal(err)
	}
	var check reflectRequest
	if err := msgpack.Unmarshal(data, &check); err != nil {
		b.Fatal(err)
	}
	if got := op.Request(check); !reflect.DeepEqual(&got, want) {
		b.Fatalf("reflection decodes %+v, want %+v", got, want)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		var r reflectRequest
		if err := msgpack.Unmarshal(data, &r); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeResponse(b *testing.B) {
	resp := benchResponse()
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	b.SetBytes(int64(len(responseBody(b, resp))))
	b.ReportAllocs()
	for b.Loop() {
		buf.Reset()
		if err := wire.EncodeResponse(enc, resp); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeResponse(b *testing.B) {
	data := responseBody(b, benchResponse())
	rd := bytes.NewReader(nil)
	dec := msgpack.NewDecoder(rd)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		rd.Reset(data)
		dec.Reset(rd)
		var r op.Response
		if err := wire.DecodeResponse(dec, &r); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCallParallel measures throughput of concurrent calls multiplexed
// over one loopback connection to an echo handler that answers inline.
func BenchmarkCallParallel(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c, _ := pair(ctx, b, echo, wire.Options{}, wire.Options{})
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		req := benchRequest()
		for pb.Next() {
			resp, err := c.Call(ctx, req)
			if err != nil {
				b.Error(err)
				return
			}
			if len(resp.Value) != len(req.Value) {
				b.Errorf("echoed %d bytes, sent %d", len(resp.Value), len(req.Value))
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

// BenchmarkCallSerial is one caller at a time: the round-trip latency.
func BenchmarkCallSerial(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c, _ := pair(ctx, b, echo, wire.Options{}, wire.Options{})
	req := benchRequest()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := c.Call(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}
