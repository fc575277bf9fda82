/* pair_style molsym: see pair_molsym.h and README.md.

   Per step and MPI rank: the full neighbour lists of local and ghost atoms (within the
   model's cutoff) give the graph; a breadth-first search from the local atoms keeps the atoms
   within message_hops edges and the edges into atoms fewer than message_hops edges away, which
   is all the local atomic energies depend on, plus the reverses of the edges that reach the
   outermost atoms (messages into those atoms, which no local energy depends on), so that every
   edge has its reverse and the model evaluates its radial networks once per pair. All periodic
   images of an atom are one node (edge shifts carry the lattice vectors), so each rank's graph
   is a part of the periodic graph that the ASE calculator builds, and on one rank all of it.
   The pairs are ordered by the hop of their nearer atom, and each stage of the model (embedding,
   interactions) evaluates only the pairs its results need (the model's stage_reach): the last
   interaction only the edges into local atoms.
   The exported module returns the energy of the local atoms, forces on every atom of the graph
   (ghosts' forces are summed onto their owners by LAMMPS' reverse communication, so newton_pair
   must be on), per-atom energies and the virial W = -sum over edges r_ij (x) dE/dr_ij, added to
   LAMMPS' global virial. */
#include "pair_molsym.h"

#include "atom.h"
#include "comm.h"
#include "error.h"
#include "force.h"
#include "memory.h"
#include "neigh_list.h"
#include "neighbor.h"
#include "utils.h"

#include <torch/csrc/jit/runtime/graph_executor.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <unordered_map>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

using namespace LAMMPS_NS;

// whether a lattice shift comes first of the pair (s, -s) in lexicographic order (components below
// 1e-8 A count as zero)
static bool positive(const double *s)
{
  for (int c = 0; c < 3; c++) {
    if (s[c] > 1e-8) return true;
    if (s[c] < -1e-8) return false;
  }
  return false;
}

// the first line of a LibTorch error (the rest is a TorchScript stack trace)
static std::string first_line(const char *text)
{
  std::string s(text);
  return s.substr(0, s.find('\n'));
}

PairMolsym::PairMolsym(LAMMPS *lmp) :
    Pair(lmp), dtype(torch::kFloat64), cutoff(0.0), message_hops(0)
{
  single_enable = 0;
  restartinfo = 0;
  one_coeff = 1;
  manybody_flag = 1;
  no_virial_fdotr_compute = 1;    // the model returns the virial
  centroidstressflag = CENTROID_NOTAVAIL;
  // TorchScript's profiling executor rewrote some graphs into ones with wrong gradients:
  // run the exported module on the simple executor
  torch::jit::getProfilingMode() = false;
  keep_freed_memory();
}

// glibc serves every allocation above 32 MB (the largest mmap threshold it allows) by a fresh
// mmap and unmaps it on free, so each step of a large system faults in and zeroes the model's
// temporaries again, page by page: at 12,288 atoms that kernel work took 26 s of system time
// against 15 s of compute. Serving them from the heap and keeping freed memory mapped lets later
// steps reuse the pages (2.7x faster there). The process keeps its peak memory until it exits.
void PairMolsym::keep_freed_memory()
{
#if defined(__GLIBC__)
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, -1);    // never give the heap's top back to the system
#endif
}

PairMolsym::~PairMolsym()
{
  if (allocated) {
    memory->destroy(setflag);
    memory->destroy(cutsq);
  }
}

void PairMolsym::allocate()
{
  allocated = 1;
  int n = atom->ntypes + 1;
  memory->create(setflag, n, n, "pair:setflag");
  memory->create(cutsq, n, n, "pair:cutsq");
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++) setflag[i][j] = 0;
}

void PairMolsym::settings(int narg, char **arg)
{
  if (narg != 0)
    error->all(FLERR, "pair_style molsym takes no arguments (got {}): give the model with pair_coeff * * "
               "MODEL.pt ELEMENT...", narg > 0 ? arg[0] : "");
}

void PairMolsym::load_model(const std::string &path)
{
  try {
    model = torch::jit::load(path, torch::kCPU);
  } catch (const std::exception &e) {
    error->all(FLERR, "pair_style molsym: cannot load model file {} (write one with `molsym export "
               "MODEL.pt OUT.pt`): {}", path, first_line(e.what()));
  }
  if (!model.hasattr("element_symbols") || !model.hasattr("cutoff") || !model.hasattr("message_hops") ||
      !model.hasattr("dtype_name"))
    error->all(FLERR, "pair_style molsym: {} is a TorchScript file but not a molsym export (no element_symbols, "
               "cutoff, message_hops and dtype_name attributes); write it with `molsym export`", path);
  model.eval();
  model_elements.clear();
  for (const auto &symbol : model.attr("element_symbols").toListRef())
    model_elements.push_back(symbol.toStringRef());
  cutoff = model.attr("cutoff").toDouble();
  message_hops = (int) model.attr("message_hops").toInt();
  stage_reach.clear();    // files written before stages were exported have none: every stage gets all edges
  if (model.hasattr("stage_reach"))
    for (const auto &reach : model.attr("stage_reach").toListRef()) stage_reach.push_back(reach.toInt());
  std::string name = model.attr("dtype_name").toStringRef();
  if (name == "float64") dtype = torch::kFloat64;
  else if (name == "float32") dtype = torch::kFloat32;
  else error->all(FLERR, "pair_style molsym: model {} has an unknown dtype {}", path, name);
  model_path = path;
}

/* pair_coeff * * MODEL.pt ELEMENT_1 ... ELEMENT_ntypes */
void PairMolsym::coeff(int narg, char **arg)
{
  if (!allocated) allocate();
  int ntypes = atom->ntypes;
  if (narg != 3 + ntypes)
    error->all(FLERR, "pair_coeff for pair_style molsym: expected * * MODEL.pt and one element per atom type "
               "({} types), got {} arguments", ntypes, narg);
  if (strcmp(arg[0], "*") != 0 || strcmp(arg[1], "*") != 0)
    error->all(FLERR, "pair_coeff for pair_style molsym must be `pair_coeff * * MODEL.pt ELEMENT...`");
  load_model(arg[2]);
  std::string known;
  for (const auto &e : model_elements) known += (known.empty() ? "" : " ") + e;
  species_of_type.assign(ntypes + 1, -1);
  for (int t = 1; t <= ntypes; t++) {
    std::string element = arg[2 + t];
    auto found = std::find(model_elements.begin(), model_elements.end(), element);
    if (found == model_elements.end())
      error->all(FLERR, "pair_coeff for pair_style molsym: element {} (atom type {}) is not in model {}, "
                 "which knows {}", element, t, model_path, known);
    species_of_type[t] = found - model_elements.begin();
  }
  for (int i = 1; i <= ntypes; i++)
    for (int j = i; j <= ntypes; j++) setflag[i][j] = 1;
}

void PairMolsym::init_style()
{
  if (force->newton_pair == 0)
    error->all(FLERR, "pair_style molsym needs newton_pair on: forces on ghost atoms are summed onto their "
               "owners by reverse communication");
  if (model_path.empty()) error->all(FLERR, "pair_style molsym: no model loaded (pair_coeff * * MODEL.pt ...)");
  if (atom->tag_enable == 0)
    error->all(FLERR, "pair_style molsym needs atom IDs (atom_modify id yes): periodic images are recognised by them");
  neighbor->add_request(this, NeighConst::REQ_FULL | NeighConst::REQ_GHOST);
  // ghost atoms out to the receptive field, with room for the atoms' motion between neighbour list builds
  double needed = message_hops * cutoff + neighbor->skin;
  if (comm->cutghostuser < needed) {
    comm->cutghostuser = needed;
    if (comm->me == 0)
      utils::logmesg(lmp, "pair_style molsym: {} message-passing hops x cutoff {} A: communication cutoff set to "
                     "{} A (hops x cutoff + skin)\n", message_hops, cutoff, needed);
  }
}

double PairMolsym::init_one(int, int)
{
  return cutoff;
}

void PairMolsym::build_graph(int nlocal, int nall)
{
  double **x = atom->x;
  tagint *tag = atom->tag;
  int *ilist = list->ilist;
  int *numneigh = list->numneigh;
  int **firstneigh = list->firstneigh;
  int nlist = list->inum + list->gnum;
  double cut2 = cutoff * cutoff;

  // rows of the neighbour lists by atom index (ilist lists local atoms, then ghosts)
  std::vector<int> row(nall, -1);
  for (int ii = 0; ii < nlist; ii++) row[ilist[ii]] = ii;

  // every atom is one node however many periodic images of it this rank holds: the first image
  // the search below reaches (the atom itself when local) stands for all, and an edge to another
  // image carries the lattice vector between the two as its shift. On one rank the graph is the
  // periodic one, with no ghost node; on several, each other rank's atom within reach is one node.
  std::unordered_map<tagint, int> image_of_tag;
  image_of_tag.reserve(2 * nlocal);
  for (int i = 0; i < nlocal; i++) image_of_tag[tag[i]] = i;

  // breadth-first search from the local atoms over pairs within the cutoff: the edges into atoms
  // fewer than message_hops edges away, and the atoms they reach
  hop.assign(nall, -1);
  std::vector<int> frontier, next;
  for (int i = 0; i < nlocal; i++) {
    hop[i] = 0;
    frontier.push_back(i);
  }
  std::vector<int> edge_atoms;    // (i, image standing for j) as LAMMPS indices
  shifts.clear();
  for (int depth = 0; depth < message_hops && !frontier.empty(); depth++) {
    next.clear();
    for (int i : frontier) {
      int r = row[i];
      if (r < 0)
        error->one(FLERR, "pair_style molsym: atom {} is {} hops from a local atom but has no neighbour list; "
                   "the communication cutoff is too short", i, depth);
      const int *jlist = firstneigh[r];
      for (int jj = 0; jj < numneigh[r]; jj++) {
        int j = jlist[jj] & NEIGHMASK;
        double d[3] = {x[j][0] - x[i][0], x[j][1] - x[i][1], x[j][2] - x[i][2]};
        if (d[0] * d[0] + d[1] * d[1] + d[2] * d[2] >= cut2) continue;
        auto found = image_of_tag.emplace(tag[j], j);
        int k = found.first->second;
        if (found.second) {    // first image of this atom reached
          hop[k] = depth + 1;
          next.push_back(k);
        }
        // r_ik = x[k] - x[i] + shift
        double shift[3] = {x[j][0] - x[k][0], x[j][1] - x[k][1], x[j][2] - x[k][2]};
        // edges go in reverse pairs (the model then evaluates radial networks once per pair); when k
        // has a neighbour list too, the pair is written from one end only
        if (hop[k] < message_hops && (k < i || (k == i && !positive(shift)))) continue;
        edge_atoms.push_back(i);
        edge_atoms.push_back(k);
        for (int c = 0; c < 3; c++) shifts.push_back(shift[c]);
        edge_atoms.push_back(k);
        edge_atoms.push_back(i);
        for (int c = 0; c < 3; c++) shifts.push_back(-shift[c]);
      }
    }
    frontier.swap(next);
  }

  // nodes: local atoms first (LAMMPS stores them first), then the ghosts reached
  atom_of_node.clear();
  node_of_atom.assign(nall, -1);
  for (int i = 0; i < nall; i++)
    if (hop[i] >= 0) {
      node_of_atom[i] = atom_of_node.size();
      atom_of_node.push_back(i);
    }
  // pairs ordered by the hop of their nearer atom (a stable counting sort), so that each stage
  // of the model takes a prefix: the pairs within its reach (the model's stage_reach)
  size_t nedges = edge_atoms.size() / 2, npairs = nedges / 2;
  std::vector<size_t> first_of_hop(message_hops + 2, 0);
  std::vector<int> nearer(npairs);
  for (size_t p = 0; p < npairs; p++) {
    nearer[p] = std::min(hop[edge_atoms[4 * p]], hop[edge_atoms[4 * p + 1]]);
    first_of_hop[nearer[p] + 1]++;
  }
  for (int h = 0; h <= message_hops; h++) first_of_hop[h + 1] += first_of_hop[h];
  stage_pairs.clear();
  for (int64_t reach : stage_reach)
    stage_pairs.push_back((int64_t) first_of_hop[std::min<int64_t>(std::max<int64_t>(reach + 1, 0), message_hops + 1)]);
  centres.resize(nedges);
  neighbours.resize(nedges);
  std::vector<double> sorted_shifts(3 * nedges);
  std::vector<size_t> next_slot(first_of_hop.begin(), first_of_hop.end() - 1);
  for (size_t p = 0; p < npairs; p++) {
    size_t q = next_slot[nearer[p]]++;
    for (int d = 0; d < 2; d++) {
      centres[2 * q + d] = node_of_atom[edge_atoms[4 * p + 2 * d]];
      neighbours[2 * q + d] = node_of_atom[edge_atoms[4 * p + 2 * d + 1]];
      for (int c = 0; c < 3; c++) sorted_shifts[3 * (2 * q + d) + c] = shifts[3 * (2 * p + d) + c];
    }
  }
  shifts.swap(sorted_shifts);
}

void PairMolsym::compute(int eflag, int vflag)
{
  ev_init(eflag, vflag);
  if (vflag_atom)
    error->all(FLERR, "pair_style molsym computes the global virial only, not per-atom virials "
               "(compute stress/atom, centroid/stress/atom)");
  int nlocal = atom->nlocal;
  int nall = nlocal + atom->nghost;
  if (nlocal == 0) return;    // nothing on this rank: no energy, no forces

  build_graph(nlocal, nall);
  double **x = atom->x;
  double **f = atom->f;
  int *type = atom->type;
  int64_t nodes = atom_of_node.size();
  int64_t nedges = centres.size();

  auto positions = torch::empty({nodes, 3}, torch::kFloat64);
  auto species = torch::empty({nodes}, torch::kInt64);
  auto pos = positions.accessor<double, 2>();
  auto spec = species.accessor<int64_t, 1>();
  for (int64_t n = 0; n < nodes; n++) {
    int i = atom_of_node[n];
    for (int k = 0; k < 3; k++) pos[n][k] = x[i][k];
    spec[n] = species_of_type[type[i]];
  }
  auto edge_index = torch::empty({2, nedges}, torch::kInt64);
  if (nedges > 0) {
    std::memcpy(edge_index[0].data_ptr<int64_t>(), centres.data(), nedges * sizeof(int64_t));
    std::memcpy(edge_index[1].data_ptr<int64_t>(), neighbours.data(), nedges * sizeof(int64_t));
  }
  auto edge_shift = torch::from_blob(shifts.data(), {nedges, 3}, torch::kFloat64).to(dtype);

  std::vector<torch::jit::IValue> inputs{positions.to(dtype), species, edge_index, edge_shift,
                                         (int64_t) nlocal, true};
  if (!stage_pairs.empty()) inputs.emplace_back(c10::List<int64_t>(stage_pairs));
  c10::intrusive_ptr<c10::ivalue::Tuple> out;
  {
    torch::jit::GraphOptimizerEnabledGuard no_optimisation(false);
    try {
      out = model.forward(inputs).toTuple();
    } catch (const std::exception &e) {
      error->one(FLERR, "pair_style molsym: the model failed on {} atoms and {} edges: {}", nodes, nedges,
                 first_line(e.what()));
    }
  }
  const auto &elements = out->elements();
  double energy = elements[0].toTensor().item<double>();
  auto atomic = elements[1].toTensor().to(torch::kFloat64).contiguous();
  auto forces = elements[2].toTensor().to(torch::kFloat64).contiguous();
  auto virial_tensor = elements[3].toTensor().to(torch::kFloat64).contiguous();

  auto force = forces.accessor<double, 2>();
  for (int64_t n = 0; n < nodes; n++) {
    int i = atom_of_node[n];
    for (int k = 0; k < 3; k++) f[i][k] += force[n][k];
  }
  if (eflag_global) eng_vdwl += energy;
  if (eflag_atom) {
    auto e = atomic.accessor<double, 1>();
    for (int n = 0; n < nlocal; n++) eatom[atom_of_node[n]] += e[n];
  }
  if (vflag_global) {
    auto w = virial_tensor.accessor<double, 2>();
    virial[0] += w[0][0];
    virial[1] += w[1][1];
    virial[2] += w[2][2];
    virial[3] += w[0][1];
    virial[4] += w[0][2];
    virial[5] += w[1][2];
  }
}
