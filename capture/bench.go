package capture

import (
	"context"
	"errors"
	"fmt"
	"image"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/mediadevices/pkg/codec"
)

// EncodeOnly runs the configured sources and encoders for d with no
// consumer, no fan-out and no timestamp bookkeeping: the bare-encode
// baseline that benchmarks compare a full recording against. It returns
// the number of frames encoded (video frames plus audio packets). A
// cancelled ctx ends it early with ctx's error.
func EncodeOnly(ctx context.Context, cfg Config, d time.Duration) (frames int, err error) {
	if err := cfg.Validate(); err != nil {
		return 0, err
	}
	cfg = cfg.withDefaults()
	clk := &clock{}
	vsrc, err := openVideoSource(cfg, clk)
	if err != nil {
		return 0, err
	}
	rel := &releasing{src: vsrc}
	venc, err := newH264Encoder(cfg, rel)
	if err != nil {
		vsrc.Close()
		return 0, err
	}
	type pipe struct {
		src io.Closer
		enc codec.ReadCloser
	}
	pipes := []pipe{{vsrc, venc}}
	if cfg.Audio {
		asrc, err := openAudioSource(cfg, clk)
		if err == nil {
			var aenc codec.ReadCloser
			if aenc, err = newOpusEncoder(cfg, asrc); err == nil {
				pipes = append(pipes, pipe{asrc, aenc})
			} else {
				asrc.Close()
			}
		}
		if err != nil {
			vsrc.Close()
			venc.Close()
			return 0, err
		}
	}

	runCtx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	clk.begin()
	var (
		wg    sync.WaitGroup
		count atomic.Int64
		errs  = make([]error, len(pipes))
	)
	wg.Go(func() {
		<-runCtx.Done()
		for _, p := range pipes {
			p.src.Close()
		}
	})
	for i, p := range pipes {
		wg.Go(func() {
			defer cancel()
			for {
				_, release, err := p.enc.Read()
				if err != nil {
					if runCtx.Err() == nil {
						errs[i] = err
					}
					return
				}
				if release != nil {
					release()
				}
				count.Add(1)
			}
		})
	}
	wg.Wait()
	for _, p := range pipes {
		errs = append(errs, p.enc.Close())
	}
	rel.done()
	if err := errors.Join(errs...); err != nil {
		return int(count.Load()), fmt.Errorf("encode only: %w", err)
	}
	return int(count.Load()), ctx.Err()
}

// releasing releases each frame when the encoder reads the next, as the
// videoTap does, so the baseline reuses frame buffers like the pipeline.
type releasing struct {
	src     videoSource
	release func()
}

func (r *releasing) Read() (image.Image, func(), error) {
	r.done()
	img, release, err := r.src.Read()
	if err != nil {
		return nil, func() {}, err
	}
	r.release = release
	return img, func() {}, nil
}

func (r *releasing) done() {
	if r.release != nil {
		r.release()
		r.release = nil
	}
}
