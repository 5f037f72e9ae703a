package lazy

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/containerd/stargz-snapshotter/estargz"
)

// TestReadTOCLimits refuses a real layer whose TOC or chunks are over the
// limits given, and accepts it within them.
func TestReadTOCLimits(t *testing.T) {
	blob, digest := esgz(t, tarOf(t, testLayers()[0]))
	ix, err := TOC(context.Background(), BytesReader(blob), int64(len(blob)), digest)
	if err != nil {
		t.Fatal(err)
	}
	tocGz := int64(len(blob)) - estargz.FooterSize - ix.TOCOffset()
	raw, err := tocJSON(blob[ix.TOCOffset():len(blob)-estargz.FooterSize], DefaultMaxTOCSize)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(raw)) <= tocGz {
		t.Fatalf("test TOC JSON of %d bytes does not compress below %d", len(raw), tocGz)
	}
	big, err := ix.file("data/big")
	if err != nil {
		t.Fatal(err)
	}
	span := big.chunks[0].blobEnd - big.chunks[0].blobOff
	for _, tc := range []struct {
		name string
		lim  Limits
		want string // in the error; "" accepts
	}{
		{"defaults", Limits{}, ""},
		{"exactly the TOC and span", Limits{MaxTOCSize: int64(len(raw)), MaxChunkSpan: 1 << 20}, ""},
		{"compressed TOC over", Limits{MaxTOCSize: tocGz - 1}, "compressed TOC"},
		{"TOC JSON over", Limits{MaxTOCSize: int64(len(raw)) - 1}, "TOC JSON"},
		{"chunk span over", Limits{MaxChunkSpan: span - 1}, "spans"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadTOC(context.Background(), BytesReader(blob), int64(len(blob)), digest, tc.lim)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("ReadTOC within %+v: %v", tc.lim, err)
				}
				return
			}
			if !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ReadTOC with %+v: %v; want ErrLimit about %q", tc.lim, err, tc.want)
			}
		})
	}
}

// TestTOCClaimingAHugeChunk refuses a TOC whose only chunk would be read
// as one allocation of almost the whole (claimed) blob: the chunk's gzip
// member runs from its offset to the TOC, a terabyte further.
func TestTOCClaimingAHugeChunk(t *testing.T) {
	const size, tocOffset = 1 << 40, 1<<40 - 1000
	toc := &estargz.JTOC{Version: 1, Entries: []*estargz.TOCEntry{{
		Name: "f", Type: "reg", Size: 10, Offset: 1,
		Digest: "sha256:" + strings.Repeat("a", 64),
	}}}
	_, err := buildIndex(toc, size, tocOffset, Limits{}.withDefaults())
	if !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), "spans 1099511626775 compressed bytes") {
		t.Fatalf("buildIndex of a chunk spanning a terabyte: %v; want ErrLimit naming the span", err)
	}
}
