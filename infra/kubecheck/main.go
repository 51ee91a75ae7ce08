// Command kubecheck decodes every object of a multi-document YAML stream (stdin), such as
// `helm template` prints, strictly into its Kubernetes API type, chosen by apiVersion and kind.
// An unknown field, a field of the wrong type (an unquoted number where a string belongs), a
// duplicate key or a kind it does not know fails the check with the object and the reason; so
// does a Deployment whose selector does not select its own pod template. It prints one line per
// object and exits 0 when all of them decode.
//
//	helm template orders deploy/helm/orders | kubecheck
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// ScaledObject is the part of KEDA's keda.sh/v1alpha1 ScaledObject the chart uses (k8s.io/api
// has no KEDA types): a field the chart sets that is not declared here fails the check, so a
// new field is added here on purpose, after reading KEDA's reference.
type ScaledObject struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              ScaledObjectSpec `json:"spec"`
}

// ScaledObjectSpec is the spec of a ScaledObject (keda.sh/v1alpha1).
type ScaledObjectSpec struct {
	ScaleTargetRef  ScaleTarget    `json:"scaleTargetRef"`
	PollingInterval *int32         `json:"pollingInterval,omitempty"`
	CooldownPeriod  *int32         `json:"cooldownPeriod,omitempty"`
	MinReplicaCount *int32         `json:"minReplicaCount,omitempty"`
	MaxReplicaCount *int32         `json:"maxReplicaCount,omitempty"`
	Triggers        []ScaleTrigger `json:"triggers"`
}

// ScaleTarget names the workload a ScaledObject scales.
type ScaleTarget struct {
	APIVersion string `json:"apiVersion,omitempty"`
	Kind       string `json:"kind,omitempty"`
	Name       string `json:"name"`
}

// ScaleTrigger is one trigger; KEDA reads its metadata as strings only.
type ScaleTrigger struct {
	Type     string            `json:"type"`
	Name     string            `json:"name,omitempty"`
	Metadata map[string]string `json:"metadata"`
}

// kafkaTriggerKeys are the metadata a kafka trigger needs (KEDA's Apache Kafka scaler).
var kafkaTriggerKeys = []string{"bootstrapServers", "consumerGroup", "topic", "lagThreshold"}

func (s *ScaledObject) check() error {
	if s.Spec.ScaleTargetRef.Name == "" {
		return errors.New("spec.scaleTargetRef.name is empty")
	}
	if s.Spec.MaxReplicaCount == nil {
		return errors.New("spec.maxReplicaCount is not set")
	}
	if len(s.Spec.Triggers) == 0 {
		return errors.New("spec.triggers is empty")
	}
	for i, trigger := range s.Spec.Triggers {
		if trigger.Type != "kafka" {
			continue
		}
		for _, key := range kafkaTriggerKeys {
			if trigger.Metadata[key] == "" {
				return fmt.Errorf("spec.triggers[%d]: a kafka trigger needs metadata.%s", i, key)
			}
		}
	}
	return nil
}

// checker is a decoded object's own consistency check, beyond its schema.
type checker interface{ check() error }

type deployment struct{ appsv1.Deployment }

func (d *deployment) check() error {
	if d.Spec.Selector == nil {
		return errors.New("spec.selector is not set")
	}
	selector, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil {
		return fmt.Errorf("spec.selector: %w", err)
	}
	if selector.Empty() || !selector.Matches(labels.Set(d.Spec.Template.Labels)) {
		return errors.New("spec.selector does not select the pod template's labels")
	}
	return nil
}

// kinds maps "apiVersion kind" to a new value of its type.
var kinds = map[string]func() any{
	"apps/v1 Deployment":                     func() any { return &deployment{} },
	"v1 Service":                             func() any { return &corev1.Service{} },
	"v1 ServiceAccount":                      func() any { return &corev1.ServiceAccount{} },
	"v1 ConfigMap":                           func() any { return &corev1.ConfigMap{} },
	"policy/v1 PodDisruptionBudget":          func() any { return &policyv1.PodDisruptionBudget{} },
	"autoscaling/v2 HorizontalPodAutoscaler": func() any { return &autoscalingv2.HorizontalPodAutoscaler{} },
	"keda.sh/v1alpha1 ScaledObject":          func() any { return &ScaledObject{} },
}

func known() string {
	names := make([]string, 0, len(kinds))
	for name := range kinds {
		names = append(names, name)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// decode checks one document; it returns "" for a document with no object (comments only).
func decode(doc []byte) (string, error) {
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	var raw any
	if err := yaml.Unmarshal(doc, &raw); err != nil {
		return "", fmt.Errorf("not YAML: %w", err)
	}
	if raw == nil {
		return "", nil
	}
	if err := yaml.Unmarshal(doc, &head); err != nil {
		return "", fmt.Errorf("not an object: %w", err)
	}
	key := head.APIVersion + " " + head.Kind
	name := fmt.Sprintf("%s %s/%s", head.APIVersion, head.Kind, head.Metadata.Name)
	makeObject, ok := kinds[key]
	if !ok {
		return name, fmt.Errorf("unknown apiVersion/kind %q (known: %s)", key, known())
	}
	if head.Metadata.Name == "" {
		return name, errors.New("metadata.name is empty")
	}
	// As the API server reads it: the YAML as JSON with no type hints (so an unquoted number
	// where a string belongs fails, as it does there), then every field known to the type.
	data, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return name, err
	}
	decoder := json.NewDecoder(bytes.NewReader(data))
	decoder.DisallowUnknownFields()
	object := makeObject()
	if err := decoder.Decode(object); err != nil {
		return name, err
	}
	if c, ok := object.(checker); ok {
		if err := c.check(); err != nil {
			return name, err
		}
	}
	return name, nil
}

func run(in io.Reader, out io.Writer) error {
	reader := utilyaml.NewYAMLReader(bufio.NewReader(in))
	count := 0
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("reading the stream: %w", err)
		}
		name, err := decode(doc)
		if err != nil {
			if name == "" {
				name = fmt.Sprintf("document %d", count+1)
			}
			return fmt.Errorf("%s: %w", name, err)
		}
		if name != "" {
			count++
			fmt.Fprintf(out, "ok %s\n", name)
		}
	}
	if count == 0 {
		return errors.New("no objects in the stream")
	}
	fmt.Fprintf(out, "%d objects decoded strictly\n", count)
	return nil
}

func main() {
	if err := run(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "kubecheck: %v\n", err)
		os.Exit(1)
	}
}
