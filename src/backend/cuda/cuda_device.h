// defines: cuda::device_count(), cuda::require_device(), cuda::select_device_for_local_rank()
// Which GPU a rank uses: local rank modulo the visible devices, so N ranks on a node with N GPUs
// get one each and oversubscribed runs still work. Plain C++ header (no CUDA includes), so the
// backend factory can call it without the CUDA toolkit on its include path.
#pragma once

namespace origami::cuda {

// Number of visible CUDA devices; 0 (not an error) when there is no driver or no GPU.
int device_count();

// Throws Error naming `what` if no CUDA device is visible at run time.
void require_device(const char* what);

// Makes device (local_rank % device_count()) current for this thread and returns its index.
// Errors name the local rank and the device count (none visible, negative rank).
int select_device_for_local_rank(int local_rank);

}  // namespace origami::cuda
