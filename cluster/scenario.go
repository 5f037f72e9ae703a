package cluster

import (
	"errors"
	"fmt"

	"github.com/faasnet/faasnet/imagegen"
	"github.com/faasnet/faasnet/swarm"
)

// Scenario is what every strategy of a comparison shares: the images and the
// emulated links. The number of VMs is chosen per run.
type Scenario struct {
	// ImageSize is the approximate size of each image (imagegen.Spec). A
	// harness with a Function sets it to the size of its eStargz image.
	ImageSize int64
	// Layers is the number of layers of each image.
	Layers int
	// Functions is the number of functions, each with its own image, that
	// every VM hosts at once; default 1.
	Functions int
	// Bandwidth is each VM's upload and download limit in bytes/s (each
	// direction its own limiter); 0 means unlimited.
	Bandwidth int64
	// RegistryBandwidth limits the registry's egress in bytes/s; 0 means
	// unlimited.
	RegistryBandwidth int64
	// BlockSize is the block faasnet's manager assigns every function (the
	// unit its VMs cut blobs into and stream down a stripe); 0 means the
	// manager picks one per image (stripe.BlockFor).
	BlockSize int64
	// PieceSize is the swarm's piece length; 0 means Kraken's 4 MiB.
	PieceSize int64
	// Seed selects the images' content; image i uses Seed+i.
	Seed int64
}

// defaults fills in the zero fields; the image size and layers matter only
// for generated images.
func (s *Scenario) defaults(generated bool) error {
	if s.Functions <= 0 {
		s.Functions = 1
	}
	if s.Layers <= 0 {
		s.Layers = 1
	}
	if s.Layers > imagegen.MaxLayers {
		return fmt.Errorf("scenario: %d layers, at most %d", s.Layers, imagegen.MaxLayers)
	}
	if generated && s.ImageSize <= 0 {
		return errors.New("scenario: no image size")
	}
	if s.PieceSize == 0 {
		s.PieceSize = swarm.DefaultPieceSize
	}
	if s.Bandwidth < 0 || s.RegistryBandwidth < 0 || s.BlockSize < 0 || s.PieceSize < 0 {
		return errors.New("scenario: negative bandwidth, block or piece size")
	}
	return nil
}
