# Enqueues jobs (now, scheduled, in a batch), runs a Sidekiq process until all are done,
# then checks its heartbeat registered the process and kept beating, and no error was logged.
# Usage: ruby run.rb PORT (the proxy's, or one redis-server's).
ENV["REDIS_PORT"] = ARGV.fetch(0)
require_relative "app"
require "sidekiq/api"
require "tmpdir"
n = 100
Sidekiq.redis { |r| r.del("done") }
(0...n - 10).each { |i| Work.perform_async(i) }
Sidekiq::Client.push_bulk("class" => Work, "args" => (n - 10...n - 5).map { |i| [i] })
(n - 5...n).each { |i| Work.perform_in(1, i) }
log_path = File.join(Dir.mktmpdir("sidekiq"), "sidekiq.log")
log = File.open(log_path, "w")
app = File.join(__dir__, "app.rb")
pid = spawn({ "REDIS_PORT" => ENV.fetch("REDIS_PORT") }, "sidekiq", "-r", app, "-c", "2", out: log, err: log)
failure = nil
begin
  deadline = Time.now + 60
  done = 0
  seen_process = false
  while Time.now < deadline
    done = Sidekiq.redis { |r| r.scard("done") }
    seen_process ||= Sidekiq::ProcessSet.new.size > 0
    break if done == n && seen_process
    sleep 0.2
  end
  failure = "jobs done #{done}/#{n}, process seen #{seen_process}" unless done == n && seen_process
  # Two more heartbeats (every 5 s; each a MULTI over the process's keys) after the jobs:
  # their errors would be logged, and a failed one does not update the beat.
  beat = -> { Sidekiq::ProcessSet.new.map { |p| p["beat"] }.max.to_f }
  last = beat.call
  beats = 0
  while failure.nil? && beats < 2 && Time.now < deadline + 20
    now = beat.call
    if now > last
      beats += 1
      last = now
    end
    sleep 0.2
  end
  failure ||= "the process stopped beating" unless beats == 2
ensure
  Process.kill("TERM", pid)
  Process.wait(pid)
end
text = File.read(log_path)
errors = text.lines.select { |l| l =~ /ERROR|CROSSSLOT|Error/ }
failure ||= "errors in the log" unless errors.empty?
abort("#{failure}\n#{errors.first(5).join}") if failure
stats = Sidekiq::Stats.new
abort("processed #{stats.processed}") unless stats.processed >= n
puts "sidekiq ok"
