package app

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/ration/ration/client"
)

const (
	formatAuto  = "auto"
	formatCSV   = "csv"
	formatJSONL = "jsonl"
)

// maxProblems is how many failed or refused lines are shown individually.
const maxProblems = 20

// idleFlush is how long a partly filled batch waits for more input: long
// enough to fill batches from a fast file, short enough that a slow stdin
// producer sees its operations applied promptly.
const idleFlush = 100 * time.Millisecond

type importOptions struct {
	format        string
	batchSize     int
	concurrency   int
	failOnRefused bool
}

func (a *App) importCommand() *cobra.Command {
	var o importOptions
	cmd := &cobra.Command{
		Use:   "import FILE|-",
		Short: "Apply grants and deductions from a CSV or JSON-lines file",
		Long: `Import applies the operations of FILE (or stdin for -) with the Batch RPC.

CSV has a header naming its columns; op, user, id, amount and timestamp are
required, expires_at and priority optional:

    op,user,id,amount,timestamp,expires_at,priority
    grant,alice,g1,100,1767225600000,1769904000000,0
    deduct,alice,d1,30,1767229200000,,

JSON lines have one object per line with the same fields:

    {"op":"grant","user":"alice","id":"g1","amount":100,"timestamp":1767225600000}

op is grant or deduct; times may also be RFC 3339 strings. The format is
taken from the extension (.csv, .jsonl, .ndjson, .json) or the first byte.

Operations of one user are applied in file order; different users are
spread over --concurrency streams of batches. Transient failures are
retried with the same ids, and importing a file again is safe: what was
applied reports as duplicates.

The summary counts operations applied, duplicates, refused by the server
(by reason: invalid_argument, conflict, insufficient_credits) and failed
(unparsable lines, or no answer within the retry budget). The exit code is
1 if any failed, or any was refused with --fail-on-refused.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.batchSize < 1 || o.batchSize > client.MaxBatchOps {
				return usageError{fmt.Errorf("--batch-size must be in [1, %d]", client.MaxBatchOps)}
			}
			if o.concurrency < 1 {
				return usageError{errors.New("--concurrency must be at least 1")}
			}
			switch o.format {
			case formatAuto, formatCSV, formatJSONL:
			default:
				return usageError{fmt.Errorf("--format must be auto, csv or jsonl, got %q", o.format)}
			}
			return a.runImport(cmd.Context(), args[0], o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.format, "format", formatAuto, "input format: auto, csv or jsonl")
	f.IntVar(&o.batchSize, "batch-size", 500, "operations per Batch call, up to 1000")
	f.IntVar(&o.concurrency, "concurrency", 4, "Batch calls in flight")
	f.BoolVar(&o.failOnRefused, "fail-on-refused", false, "exit 1 when the server refused any operation")
	return cmd
}

// record is one input line: an operation, or why it could not be read.
type record struct {
	line int
	op   client.Op
	err  error
}

func (a *App) runImport(ctx context.Context, name string, o importOptions) error {
	in, total, format, err := a.openInput(name, o.format)
	if err != nil {
		return err
	}
	defer in.Close()

	c, err := a.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()

	st := newImportStats()
	stopProgress := a.importProgress(st, total)

	queues := make([]chan record, o.concurrency)
	var wg sync.WaitGroup
	for i := range queues {
		queues[i] = make(chan record, o.batchSize)
		q := queues[i]
		wg.Go(func() { importWorker(ctx, c, q, o.batchSize, st) })
	}
	seed := maphash.MakeSeed()
	readErr := readRecords(ctx, in, format, a.Now(), func(r record) bool {
		if r.err != nil {
			st.record(r, client.OpResult{Err: r.err})
			return true
		}
		// One queue per user keeps each user's operations in file order:
		// a deduction must not overtake the grant that pays for it.
		q := queues[maphash.String(seed, r.op.User)%uint64(len(queues))]
		select {
		case q <- r:
			return true
		case <-ctx.Done():
			return false
		}
	})
	for _, q := range queues {
		close(q)
	}
	wg.Wait()
	stopProgress()

	st.printProblems(a.Stderr)
	if err := st.printSummary(a.Stdout, a.g.output); err != nil {
		return err
	}
	switch {
	case readErr != nil:
		return fmt.Errorf("import stopped: %w", readErr)
	case ctx.Err() != nil:
		return fmt.Errorf("import interrupted: %w", ctx.Err())
	case st.failed > 0 || (o.failOnRefused && st.refused > 0):
		return exitError{exitFail}
	}
	return nil
}

// openInput opens the file (or stdin), settles the format and counts the
// operations of a regular file for the progress bar (-1: unknown).
func (a *App) openInput(name, format string) (io.ReadCloser, int64, string, error) {
	var (
		rc    io.ReadCloser
		total int64 = -1
	)
	if name == "-" {
		rc = io.NopCloser(a.Stdin)
	} else {
		f, err := os.Open(name)
		if err != nil {
			return nil, 0, "", err
		}
		rc = f
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
			if n, err := countLines(f); err == nil {
				total = n
			}
			if _, err := f.Seek(0, io.SeekStart); err != nil {
				f.Close()
				return nil, 0, "", err
			}
		}
	}
	br := bufio.NewReaderSize(rc, 1<<16)
	if format == formatAuto {
		format = detectFormat(name, br)
	}
	if format == formatCSV && total > 0 {
		total-- // the header
	}
	return struct {
		io.Reader
		io.Closer
	}{br, rc}, total, format, nil
}

func detectFormat(name string, br *bufio.Reader) string {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".csv":
		return formatCSV
	case ".jsonl", ".ndjson", ".json":
		return formatJSONL
	}
	for i := 1; ; i++ {
		b, err := br.Peek(i)
		if err != nil || len(b) < i {
			return formatCSV
		}
		switch b[i-1] {
		case ' ', '\t', '\r', '\n':
			continue
		case '{':
			return formatJSONL
		}
		return formatCSV
	}
}

// countLines counts the non-blank lines of r.
func countLines(r io.Reader) (int64, error) {
	var n int64
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) > 0 {
			n++
		}
	}
	return n, sc.Err()
}

// readRecords parses r and calls emit for each record until emit returns
// false. It returns an error only when the input cannot be read on (I/O,
// a bad CSV header); bad lines are records with err set.
func readRecords(ctx context.Context, r io.Reader, format string, now time.Time, emit func(record) bool) error {
	if format == formatJSONL {
		return readJSONL(ctx, r, now, emit)
	}
	return readCSV(ctx, r, now, emit)
}

var csvColumns = []string{"op", "user", "id", "amount", "timestamp", "expires_at", "priority"}

func readCSV(ctx context.Context, r io.Reader, now time.Time, emit func(record) bool) error {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	cr.TrimLeadingSpace = true
	header, err := cr.Read()
	if err == io.EOF {
		return nil
	}
	if err != nil {
		return fmt.Errorf("csv header: %w", err)
	}
	col := map[string]int{}
	for i, h := range header {
		h = strings.ToLower(strings.TrimSpace(strings.TrimPrefix(h, "\ufeff")))
		if !slices.Contains(csvColumns, h) {
			return fmt.Errorf("csv header: unknown column %q (want %s)", h, strings.Join(csvColumns, ","))
		}
		col[h] = i
	}
	for _, need := range csvColumns[:5] {
		if _, ok := col[need]; !ok {
			return fmt.Errorf("csv header: missing column %q", need)
		}
	}
	for ctx.Err() == nil {
		fields, err := cr.Read()
		if err == io.EOF {
			return nil
		}
		var rec record
		switch {
		case err != nil:
			var pe *csv.ParseError
			if !errors.As(err, &pe) {
				return err
			}
			rec = record{line: pe.Line, err: err}
		default:
			get := func(name string) string {
				if i, ok := col[name]; ok && i < len(fields) {
					return strings.TrimSpace(fields[i])
				}
				return ""
			}
			line, _ := cr.FieldPos(0)
			if len(fields) != len(header) {
				rec = record{line: line, err: fmt.Errorf("%d fields, header has %d", len(fields), len(header))}
				break
			}
			op, err := buildOp(get("op"), get("user"), get("id"), get("amount"), get("timestamp"), get("expires_at"), get("priority"), now)
			rec = record{line: line, op: op, err: err}
		}
		if !emit(rec) {
			return nil
		}
	}
	return nil
}

// jsonOp is one JSON line. Times are raw so that both integers and RFC 3339
// strings are accepted.
type jsonOp struct {
	Op        string          `json:"op"`
	User      string          `json:"user"`
	ID        string          `json:"id"`
	Amount    json.Number     `json:"amount"`
	Timestamp json.RawMessage `json:"timestamp"`
	ExpiresAt json.RawMessage `json:"expires_at"`
	Priority  json.Number     `json:"priority"`
}

func readJSONL(ctx context.Context, r io.Reader, now time.Time, emit func(record) bool) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for line := 1; sc.Scan() && ctx.Err() == nil; line++ {
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		var jo jsonOp
		dec := json.NewDecoder(bytes.NewReader(b))
		// A misspelt field ("expires") would otherwise silently make a
		// grant that never expires.
		dec.DisallowUnknownFields()
		dec.UseNumber()
		rec := record{line: line}
		if err := dec.Decode(&jo); err != nil {
			rec.err = fmt.Errorf("bad JSON: %w", err)
		} else {
			rec.op, rec.err = buildOp(jo.Op, jo.User, jo.ID, jo.Amount.String(),
				rawTime(jo.Timestamp), rawTime(jo.ExpiresAt), jo.Priority.String(), now)
		}
		if !emit(rec) {
			return nil
		}
	}
	return sc.Err()
}

// rawTime turns a JSON number or string into the text parseTime reads.
func rawTime(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	if string(raw) == "null" {
		return ""
	}
	return string(raw)
}

// buildOp validates the fields of one input operation. The server checks
// them again; checking here gives a line number and spares a round trip.
func buildOp(kind, user, id, amount, ts, expires, priority string, now time.Time) (client.Op, error) {
	if user == "" {
		return client.Op{}, errors.New("user is empty")
	}
	if id == "" {
		return client.Op{}, errors.New("id is empty")
	}
	amt, err := strconv.ParseInt(amount, 10, 64)
	if err != nil {
		return client.Op{}, fmt.Errorf("amount %q is not an integer", amount)
	}
	if ts == "" {
		return client.Op{}, errors.New("timestamp is empty")
	}
	t, err := parseTime(ts, now)
	if err != nil {
		return client.Op{}, fmt.Errorf("timestamp: %w", err)
	}
	switch strings.ToLower(kind) {
	case "grant":
		g := client.Grant{ID: id, Amount: amt, Timestamp: t}
		if expires != "" {
			e, err := parseTime(expires, now)
			if err != nil {
				return client.Op{}, fmt.Errorf("expires_at: %w", err)
			}
			g.ExpiresAt = &e
		}
		if priority != "" {
			p, err := strconv.ParseInt(priority, 10, 32)
			if err != nil {
				return client.Op{}, fmt.Errorf("priority %q is not a 32-bit integer", priority)
			}
			g.Priority = int32(p)
		}
		return client.GrantOp(user, g), nil
	case "deduct", "deduction":
		if expires != "" || (priority != "" && priority != "0") {
			return client.Op{}, errors.New("expires_at and priority apply to grants only")
		}
		return client.DeductOp(user, client.Deduction{ID: id, Amount: amt, Timestamp: t}), nil
	}
	return client.Op{}, fmt.Errorf("op %q is neither grant nor deduct", kind)
}

// importWorker applies one queue's records in order, in batches.
func importWorker(ctx context.Context, c *client.Client, in <-chan record, size int, st *importStats) {
	batch := make([]record, 0, size)
	ops := make([]client.Op, 0, size)
	idle := time.NewTimer(idleFlush)
	idle.Stop()
	flush := func() {
		idle.Stop()
		if len(batch) == 0 {
			return
		}
		ops = ops[:0]
		for _, r := range batch {
			ops = append(ops, r.op)
		}
		// Batch's error only summarises the per-operation ones.
		res, _ := c.Batch(ctx, ops)
		for i, r := range batch {
			st.record(r, res[i])
		}
		batch = batch[:0]
	}
	for {
		select {
		case r, ok := <-in:
			if !ok {
				flush()
				return
			}
			batch = append(batch, r)
			if len(batch) == 1 {
				idle.Reset(idleFlush)
			}
			if len(batch) == size {
				flush()
			}
		case <-idle.C:
			flush()
		}
	}
}

// importStats tallies outcomes; safe for concurrent use.
type importStats struct {
	mu         sync.Mutex
	done       int64
	applied    int64
	duplicates int64
	refused    int64
	failed     int64
	refusedBy  map[string]int64
	failedBy   map[string]int64
	problems   []string
	more       int
}

func newImportStats() *importStats {
	return &importStats{refusedBy: map[string]int64{}, failedBy: map[string]int64{}}
}

// refusalReason names a server refusal as the HTTP API's error codes do,
// or returns "" for an error that is not a refusal.
func refusalReason(err error) string {
	switch {
	case errors.Is(err, client.ErrInvalidArgument):
		return "invalid_argument"
	case errors.Is(err, client.ErrConflict):
		return "conflict"
	case errors.Is(err, client.ErrInsufficientCredits):
		return "insufficient_credits"
	}
	return ""
}

func failureReason(err error) string {
	switch {
	case errors.Is(err, client.ErrOutcomeUnknown):
		return "outcome_unknown"
	case errors.Is(err, client.ErrUnavailable):
		return "unavailable"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return "interrupted"
	}
	return "error"
}

func (s *importStats) record(r record, res client.OpResult) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.done++
	var what string
	switch {
	case r.err != nil:
		s.failed++
		s.failedBy["parse"]++
		what = "unreadable: " + r.err.Error()
	case res.Err == nil:
		dup := (res.Grant != nil && res.Grant.Duplicate) || (res.Deduct != nil && res.Deduct.Duplicate)
		if dup {
			s.duplicates++
		} else {
			s.applied++
		}
		return
	case refusalReason(res.Err) != "":
		reason := refusalReason(res.Err)
		s.refused++
		s.refusedBy[reason]++
		// The client's refusals say their class first.
		what = "refused: " + message(res.Err)
	default:
		reason := failureReason(res.Err)
		s.failed++
		s.failedBy[reason]++
		what = fmt.Sprintf("failed (%s): %s", reason, message(res.Err))
	}
	if len(s.problems) < maxProblems {
		s.problems = append(s.problems, fmt.Sprintf("line %d: %s", r.line, what))
	} else {
		s.more++
	}
}

func (s *importStats) line() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Sprintf("applied %d, duplicates %d, refused %d, failed %d", s.applied, s.duplicates, s.refused, s.failed)
}

func (s *importStats) doneCount() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.done
}

func (s *importStats) printProblems(w io.Writer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.problems {
		fmt.Fprintln(w, p)
	}
	if s.more > 0 {
		fmt.Fprintf(w, "... and %d more\n", s.more)
	}
}

type jsonImportSummary struct {
	Operations      int64            `json:"operations"`
	Applied         int64            `json:"applied"`
	Duplicates      int64            `json:"duplicates"`
	Refused         int64            `json:"refused"`
	RefusedByReason map[string]int64 `json:"refused_by_reason"`
	Failed          int64            `json:"failed"`
	FailedByReason  map[string]int64 `json:"failed_by_reason"`
}

func (s *importStats) printSummary(w io.Writer, output string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if output == outJSON {
		return writeJSON(w, jsonImportSummary{
			Operations: s.done, Applied: s.applied, Duplicates: s.duplicates,
			Refused: s.refused, RefusedByReason: s.refusedBy, Failed: s.failed, FailedByReason: s.failedBy,
		})
	}
	tw := newTable(w)
	row(tw, "operations", s.done)
	row(tw, "applied", s.applied)
	row(tw, "duplicates", s.duplicates)
	row(tw, "refused", s.refused)
	for _, k := range sortedKeys(s.refusedBy) {
		row(tw, "  "+k, s.refusedBy[k])
	}
	row(tw, "failed", s.failed)
	for _, k := range sortedKeys(s.failedBy) {
		row(tw, "  "+k, s.failedBy[k])
	}
	return tw.Flush()
}

func sortedKeys(m map[string]int64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// importProgress reports progress on stderr until the returned function is
// called: a bar on a terminal, a line every ProgressInterval otherwise
// (logs and CI output do not render carriage returns).
func (a *App) importProgress(st *importStats, total int64) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	if a.StderrIsTerminal {
		bar := progressbar.NewOptions64(total,
			progressbar.OptionSetWriter(a.Stderr),
			progressbar.OptionSetDescription("importing"),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionSetItsString("ops"),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionClearOnFinish(),
		)
		wg.Go(func() {
			t := time.NewTicker(100 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-done:
					_ = bar.Set64(st.doneCount())
					_ = bar.Finish()
					return
				case <-t.C:
					_ = bar.Set64(st.doneCount())
				}
			}
		})
	} else {
		every := a.ProgressInterval
		if every <= 0 {
			every = 2 * time.Second
		}
		wg.Go(func() {
			t := time.NewTicker(every)
			defer t.Stop()
			for {
				select {
				case <-done:
					return
				case <-t.C:
					of := ""
					if total >= 0 {
						of = fmt.Sprintf(" of %d", total)
					}
					fmt.Fprintf(a.Stderr, "import: %d%s operations done (%s)\n", st.doneCount(), of, st.line())
				}
			}
		})
	}
	return func() {
		close(done)
		wg.Wait()
	}
}
