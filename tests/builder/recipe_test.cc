#include "builder/recipe.h"

#include <gtest/gtest.h>

#include <chrono>
#include <string>

namespace imgtool::builder {
namespace {

Recipe MustParse(std::string_view text) {
  auto recipe = ParseRecipe(text, "r.yaml");
  EXPECT_TRUE(recipe.has_value()) << recipe.error().ToString();
  return recipe ? *recipe : Recipe{};
}

// The error text of a recipe that must be refused.
std::string ErrorOf(std::string_view text) {
  auto recipe = ParseRecipe(text, "r.yaml");
  EXPECT_FALSE(recipe.has_value()) << "accepted:\n" << text;
  if (recipe) return "";
  EXPECT_EQ(recipe.error().code(), ErrorCode::kInvalidArgument);
  return recipe.error().ToString();
}

TEST(RecipeTest, ParsesEveryField) {
  Recipe recipe = MustParse(R"(name: hello:latest
args: { GREETING: hello, WHO: world }
source_date_epoch: 1700000000
stages:
  build:
    from: { rootfs: base.tar }
    steps:
      - run: echo built > /out
from:
  debootstrap: { suite: bookworm, variant: minbase, components: [main], include: [ca-certificates], exclude: [vim], arch: amd64 }
env: { LANG: C.UTF-8 }
steps:
  - run: echo "$GREETING" > /greeting
    network: none
    memory: 256m
    cpus: "0.5"
    mounts:
      - { type: cache, target: /var/cache/apt, id: apt }
      - { type: bind, source: files, target: /src }
  - run: [/bin/sh, -c, "true"]
  - copy: { src: files/, dest: /opt/app/, chown: "1000:1000", mode: "0755" }
  - copy: { src: [/out], dest: /out, from: build }
  - env: { APP_HOME: /opt/app }
  - workdir: /opt/app
  - user: "1000:1000"
  - label: { org.example.x: "1" }
  - shell: [/bin/bash, -c]
config:
  entrypoint: [/bin/app]
  cmd: [--help]
  env: { A: b }
  user: nobody
  workdir: /
  expose: ["8080", "53/udp"]
  labels: { a: b }
  volumes: [/data]
  stopsignal: SIGTERM
)");
  EXPECT_EQ(recipe.name, "hello:latest");
  ASSERT_EQ(recipe.args.size(), 2u);
  EXPECT_EQ(recipe.args[0].first, "GREETING");
  EXPECT_EQ(recipe.source_date_epoch, 1700000000);
  ASSERT_EQ(recipe.stages.size(), 2u);
  EXPECT_EQ(recipe.stages[0].name, "build");
  EXPECT_EQ(recipe.stages[0].from.kind, Base::Kind::kRootfs);
  const Stage& last = recipe.final_stage();
  EXPECT_EQ(last.from.kind, Base::Kind::kDebootstrap);
  EXPECT_EQ(last.from.debootstrap.suite, "bookworm");
  EXPECT_EQ(last.from.debootstrap.include, std::vector<std::string>{"ca-certificates"});
  EXPECT_TRUE(last.from.debootstrap.mirror.empty());
  ASSERT_EQ(last.steps.size(), 9u);
  EXPECT_EQ(last.steps[0].kind, Step::Kind::kRun);
  EXPECT_EQ(last.steps[0].network, "none");
  EXPECT_EQ(last.steps[0].memory_bytes, 256 << 20);
  EXPECT_EQ(last.steps[0].cpus, 0.5);
  ASSERT_EQ(last.steps[0].mounts.size(), 2u);
  EXPECT_EQ(last.steps[0].mounts[0].type, RunMount::Type::kCache);
  EXPECT_EQ(last.steps[0].mounts[1].source, "files");
  EXPECT_EQ(last.steps[0].location.line, 13);
  EXPECT_EQ(last.steps[1].exec.size(), 3u);
  EXPECT_EQ(last.steps[2].copy.mode, "0755");
  EXPECT_EQ(last.steps[3].copy.from, "build");
  EXPECT_EQ(last.steps[8].shell[0], "/bin/bash");
  EXPECT_EQ(last.config.expose, (std::vector<std::string>{"8080/tcp", "53/udp"}));
  EXPECT_EQ(DescribeStep(last.steps[4]), "ENV APP_HOME=/opt/app");
}

TEST(RecipeTest, ScratchForms) {
  EXPECT_EQ(MustParse("from: scratch\n").final_stage().from.kind, Base::Kind::kScratch);
  EXPECT_EQ(MustParse("from: { scratch: {} }\n").final_stage().from.kind, Base::Kind::kScratch);
  EXPECT_EQ(MustParse("from: { image: busybox }\n").final_stage().from.image, "busybox");
}

TEST(RecipeTest, UnknownTopLevelKeyNamesLineAndColumn) {
  EXPECT_EQ(ErrorOf("from: scratch\nstepz: []\n"),
            "r.yaml:2:1: recipe: unknown key \"stepz\" (allowed: name, args, source_date_epoch, "
            "from, env, steps, config, stages)");
}

TEST(RecipeTest, UnknownKeyInStep) {
  EXPECT_EQ(ErrorOf("from: scratch\nsteps:\n  - run: true\n    netwrk: none\n"),
            "r.yaml:4:5: step 1: unknown key \"netwrk\" (allowed: run, network, mounts, memory, "
            "cpus)");
}

TEST(RecipeTest, BadRecipesNameTheLine) {
  struct Case {
    const char* text;
    const char* prefix;
  };
  const Case cases[] = {
      // Unknown keys.
      {"from: scratch\nsteps:\n  - copy: { src: a, dest: /a, owner: x }\n",
       "r.yaml:3:31: step 1.copy: unknown key \"owner\""},
      {"from:\n  debootstrap: { suite: bookworm, mirorr: x }\n",
       "r.yaml:2:35: from.debootstrap: unknown key \"mirorr\""},
      {"from: scratch\nconfig:\n  cmdd: [a]\n", "r.yaml:3:3: config: unknown key \"cmdd\""},
      {"stages:\n  a:\n    from: scratch\n    stepz: []\nfrom: scratch\n",
       "r.yaml:4:5: stage a: unknown key \"stepz\""},
      {"from: scratch\nsteps:\n  - run: true\n    mounts: [{ type: cache, target: /c, size: 1 }]\n",
       "r.yaml:4:41: step 1.mounts[0]: unknown key \"size\""},
      // Wrong types.
      {"from: scratch\nsteps:\n  - run: { a: b }\n", "r.yaml:3:10: step 1.run: expected a string"},
      {"from: scratch\nsteps: { run: x }\n", "r.yaml:2:8: recipe.steps: expected a list"},
      {"from: scratch\nenv: [a]\n", "r.yaml:2:6: recipe.env: expected a mapping"},
      {"from: scratch\nargs: { A: [1] }\n", "r.yaml:2:12: args.A: expected a string"},
      {"from: scratch\nconfig: { cmd: echo }\n",
       "r.yaml:2:16: config.cmd: expected a list of strings"},
      {"from: scratch\nsource_date_epoch: yesterday\n",
       "r.yaml:2:20: source_date_epoch: expected a non-negative integer"},
      {"from: scratch\nsteps:\n  - run: x\n    network: wifi\n",
       "r.yaml:4:14: step 1.network: expected none, bridge or host"},
      {"from: scratch\nsteps:\n  - run: x\n    memory: lots\n",
       "r.yaml:4:13: step 1.memory: expected a size"},
      {"from: scratch\nsteps:\n  - copy: { src: a, dest: /a, mode: \"999\" }\n",
       "r.yaml:3:37: step 1.copy.mode: expected an octal mode"},
      {"from: scratch\nsteps:\n  - copy: { src: a, dest: /a, chown: root }\n",
       "r.yaml:3:38: step 1.copy.chown: expected \"UID[:GID]\""},
      {"from: scratch\nsteps:\n  - workdir: relative\n",
       "r.yaml:3:14: step 1.workdir: expected an absolute path"},
      {"from: scratch\nsteps:\n  - run: a\n    copy: { src: a, dest: /a }\n",
       "r.yaml:4:5: step 1: one step does one thing"},
      {"from: scratch\nsteps:\n  - frobnicate: a\n",
       "r.yaml:3:5: step 1: expected one of run, copy"},
      {"from: scratch\nconfig: { expose: [\"80/icmp\"] }\n",
       "r.yaml:2:20: config.expose: expected"},
      // Missing from.
      {"steps: []\n", "r.yaml:1:1: recipe: missing \"from\""},
      {"stages:\n  a:\n    steps: []\nfrom: scratch\n", "r.yaml:3:5: stage a: missing \"from\""},
      {"from: { image: a, scratch: {} }\n", "r.yaml:1:7: from: give exactly one"},
      {"from: busybox\n", "r.yaml:1:7: from: expected \"scratch\""},
      {"from:\n  debootstrap: { variant: minbase }\n",
       "r.yaml:2:16: from.debootstrap: missing \"suite\""},
      // Copy sources outside the context.
      {"from: scratch\nsteps:\n  - copy: { src: ../etc/passwd, dest: /p }\n",
       "r.yaml:3:18: step 1.copy.src: \"../etc/passwd\" is outside the build context"},
      {"from: scratch\nsteps:\n  - copy:\n      src: [ok, a/../../x]\n      dest: /p\n",
       "r.yaml:4:17: step 1.copy.src: \"a/../../x\" is outside the build context"},
      {"from: { rootfs: ../base.tar }\n", "r.yaml:1:17: from.rootfs: \"../base.tar\" is outside"},
      {"from: scratch\nsteps:\n  - run: x\n    mounts: [{ type: bind, source: .., target: /x }]\n",
       "r.yaml:4:36: step 1.mounts[0].source: \"..\" is outside"},
      // Undefined stages.
      {"from: { stage: nope }\n", "r.yaml:1:16: undefined stage \"nope\""},
      {"from: scratch\nsteps:\n  - copy: { src: /a, dest: /a, from: nope }\n",
       "r.yaml:3:38: undefined stage \"nope\""},
      {"stages:\n  a:\n    from: { stage: b }\n  b:\n    from: scratch\nfrom: scratch\n",
       "r.yaml:3:20: undefined stage \"b\""},
      {"stages:\n  a:\n    from: { stage: a }\nfrom: scratch\n",
       "r.yaml:3:20: undefined stage \"a\" (a stage can not start from itself)"},
      {"stages:\n  A:\n    from: scratch\nfrom: scratch\n",
       "r.yaml:2:3: stages: \"A\" is not a valid stage name"},
      // YAML syntax.
      {"from: [scratch\n", "r.yaml:2:1: "},
      {"- a\n- b\n", "r.yaml:1:1: a recipe is a mapping"},
      {"", "r.yaml:1:1: empty recipe"},
  };
  for (const Case& c : cases) {
    std::string error = ErrorOf(c.text);
    EXPECT_TRUE(error.starts_with(c.prefix))
        << "recipe:\n"
        << c.text << "\nerror:    " << error << "\nexpected: " << c.prefix;
  }
}

TEST(RecipeTest, RefusesAliasBombs) {
  std::string bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n";
  char prev = 'a';
  for (char c = 'b'; c <= 'j'; ++c) {
    bomb += std::string(1, c) + ": &" + c + " [";
    for (int i = 0; i < 10; ++i) bomb += std::string(i ? ", *" : "*") + prev;
    bomb += "]\n";
    prev = c;
  }
  bomb += "from: scratch\n";
  std::string error = ErrorOf(bomb);
  EXPECT_NE(error.find("aliases; refusing"), std::string::npos) << error;
}

TEST(RecipeTest, RefusesAliasBombsUnderTheAliasLimit) {
  // 30 levels of two aliases each: 60 aliases, 2^30 nodes once expanded.
  std::string bomb = "l0: &l0 [x, x]\n";
  for (int i = 1; i <= 30; ++i) {
    std::string prev = "l" + std::to_string(i - 1);
    std::string name = "l" + std::to_string(i);
    bomb += name + ": &" + name + " [*" + prev + ", *" + prev + "]\n";
  }
  bomb += "from: scratch\n";
  auto started = std::chrono::steady_clock::now();
  std::string error = ErrorOf(bomb);
  EXPECT_NE(error.find("YAML nodes after alias expansion; refusing it"), std::string::npos)
      << error;
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(2));
}

TEST(RecipeTest, RefusesOversizedRecipes) {
  std::string big = "from: scratch\n#" + std::string(kMaxRecipeSize, 'x') + "\n";
  std::string error = ErrorOf(big);
  EXPECT_NE(error.find("over the limit"), std::string::npos) << error;
}

TEST(RecipeTest, BuildArgs) {
  Recipe recipe = MustParse("args: { A: one, B: two }\nfrom: scratch\n");
  auto args = ResolveArgs(recipe, {"B=three"});
  ASSERT_TRUE(args.has_value()) << args.error().ToString();
  EXPECT_EQ((*args)["A"], "one");
  EXPECT_EQ((*args)["B"], "three");
  auto unknown = ResolveArgs(recipe, {"C=x"});
  ASSERT_FALSE(unknown.has_value());
  EXPECT_EQ(unknown.error().ToString(),
            "--build-arg C: r.yaml declares no such arg (it declares A, B)");
  EXPECT_FALSE(ResolveArgs(recipe, {"novalue"}).has_value());
}

TEST(RecipeTest, ExpandsVariables) {
  std::map<std::string, std::string> vars = {{"A", "1"}, {"B", "two"}};
  EXPECT_EQ(ExpandVars("x${A}y${B}z", vars), "x1ytwoz");
  EXPECT_EQ(ExpandVars("$A ${C} $$ ${A", vars), "$A ${C} $ ${A");
  EXPECT_EQ(ReferencedVars("echo $A ${B} $C", vars), (std::vector<std::string>{"A", "B"}));
  EXPECT_TRUE(ReferencedVars("echo $AB", vars).empty());
}

TEST(RecipeTest, StagesNeededForTarget) {
  Recipe recipe = MustParse(R"(stages:
  a: { from: scratch }
  b: { from: { stage: a } }
  unused: { from: scratch }
  c:
    from: scratch
    steps:
      - copy: { src: /x, dest: /x, from: b }
from: { stage: c }
)");
  std::vector<std::string> names;
  for (const Stage* stage : StagesNeededFor(recipe, recipe.final_stage())) {
    names.push_back(stage->name);
  }
  EXPECT_EQ(names, (std::vector<std::string>{"a", "b", "c", ""}));
}

TEST(RecipeTest, ByteSizes) {
  EXPECT_EQ(*ParseByteSize("64m"), 64 << 20);
  EXPECT_EQ(*ParseByteSize("1G"), 1 << 30);
  EXPECT_EQ(*ParseByteSize("512kb"), 512 << 10);
  EXPECT_FALSE(ParseByteSize("m").has_value());
}

}  // namespace
}  // namespace imgtool::builder
