"""Loading: from a Dataset to batches on the device.

- `samplers`: seeded (and rank-sharded) orders; balanced draws over strata (source x class).
- `loader`: `make_loader`, a DataLoader whose workers, pinned memory and prefetching fit the machine.
- `shared_memory`: the /dev/shm budget that worker batches need, and the settings that fit it.
- `batch_ring`: workers write large batches into reused shared-memory slots.
- `device_data`: the whole split resident on the device, augmented per batch there.
"""
