// placeholder, replaced by the benchmark
print("zeropod-checkpoint-bench")
