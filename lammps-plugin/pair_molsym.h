/* pair_style molsym: a molsym potential exported to TorchScript (`molsym export`), evaluated by
   LibTorch on every MPI rank over its local atoms and ghost atoms out to the model's receptive
   field. See README.md beside this file. */
#ifndef MOLSYM_PAIR_MOLSYM_H
#define MOLSYM_PAIR_MOLSYM_H

#include "pair.h"

#include <torch/script.h>

#include <string>
#include <vector>

namespace LAMMPS_NS {

class PairMolsym : public Pair {
 public:
  PairMolsym(class LAMMPS *);
  ~PairMolsym() override;
  void compute(int, int) override;
  void settings(int, char **) override;
  void coeff(int, char **) override;
  void init_style() override;
  double init_one(int, int) override;

 protected:
  void allocate();
  // large tensors from the heap, freed memory kept for the next step (glibc; see the .cpp)
  static void keep_freed_memory();
  void load_model(const std::string &path);
  // atoms within message_hops edges of a local atom, local atoms first (the model sums the
  // energies of the first nlocal atoms), and the edges into atoms fewer than message_hops away;
  // periodic images of one atom are one node (edge shifts)
  void build_graph(int nlocal, int nall);

  torch::jit::Module model;
  std::string model_path;
  torch::ScalarType dtype;
  double cutoff;
  int message_hops;
  std::vector<int64_t> stage_reach;        // per model stage, the hop distance its results must reach
  std::vector<std::string> model_elements;
  std::vector<int64_t> species_of_type;    // element index in the model of each LAMMPS type (1-based)

  // graph of the current step
  std::vector<int> atom_of_node;           // LAMMPS index of each node of the graph
  std::vector<int> node_of_atom;           // node of each LAMMPS atom (-1: not in the graph)
  std::vector<int> hop;                    // hop distance from the local atoms (-1: beyond)
  std::vector<double> shifts;              // (E, 3) lattice shifts of the edges, Å
  std::vector<int64_t> centres, neighbours;  // edges (i, j) as node indices: j is a neighbour of i
  std::vector<int64_t> stage_pairs;        // per stage, the pairs (a prefix of the edges) it evaluates
};

}    // namespace LAMMPS_NS

#endif
