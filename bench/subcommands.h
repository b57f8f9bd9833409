// kvblockd-bench subcommands. Each lives in its own folder of bench/ and
// parses its own flags (argv[0] is the subcommand name).
#pragma once

namespace kvb::bench {

int run_replay(int argc, char** argv);        // bench/replay: trace replay through the block manager
int run_copy(int argc, char** argv);          // bench/copy: copy engines vs memcpy / cudaMemcpy
int run_transport(int argc, char** argv);     // bench/transport: UCX transfers and AM round trips
int run_load(int argc, char** argv);          // bench/load: N engine sessions against kvblockd
int run_disk(int argc, char** argv);          // bench/disk: disk tier (G3) vs fio, restart time
int run_cluster(int argc, char** argv);       // bench/cluster: kvblockd workers as one cache (hit ratio, G4 GB/s)
int run_gpu_request(int argc, char** argv);   // bench/daemon_gpu: a request's blocks through kvblockd on a GPU
int run_daemon_bench(int argc, char** argv);  // bench/daemon_host: host offload/onboard through kvblockd vs memcpy

}  // namespace kvb::bench
